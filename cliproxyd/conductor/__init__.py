"""The conductor: which credential serves a request, and what happens when it fails."""
