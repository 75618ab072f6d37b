//! Dockerfile front end: parser directives, line continuations, heredocs, shell and JSON forms,
//! flags, the typed instruction model, validation and word expansion.

mod error;
#[allow(dead_code)] // used by the parser landing next
mod heredoc;
mod model;
mod shell_lex;
mod shell_pattern;

pub use error::{DockerfileError, ExpandError};
pub use model::*;
pub use shell_lex::{EmptyEnv, Env, Expansion, ShellLex};
