//! Store integration for layers (filled in once the store lands).
