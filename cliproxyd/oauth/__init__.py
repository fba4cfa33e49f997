"""OAuth accounts of the CLI tools: provider constants, login and token refresh."""
