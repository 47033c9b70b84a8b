"""Subject/explainer model resolution and the architecture table."""
