"""The compound library files shipped with cmcl (CSV; source and licence in README.md)."""
