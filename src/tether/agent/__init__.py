"""The remote agent: a standard-library-only program shipped as one zipapp by content hash."""
