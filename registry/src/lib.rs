//! rbuild-registry: OCI distribution client (references, auth, pull, push).
#![warn(missing_docs)]
