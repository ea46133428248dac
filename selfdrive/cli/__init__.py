"""click commands: thin, no logic of their own."""
