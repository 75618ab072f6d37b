//! Dockerfile front end: parser directives, line continuations, heredocs, shell and JSON forms,
//! flags, the typed instruction model, validation and word expansion.
//!
//! [`parse_ast`] gives BuildKit's raw syntax tree (used for the conformance dump);
//! [`parse`] gives the validated, typed [`Dockerfile`] that the executor runs.

mod ast;
mod convert;
mod directives;
mod error;
mod flags;
mod heredoc;
mod line_parsers;
mod model;
mod shell_lex;
mod shell_pattern;

pub use ast::{go_quote, parse_ast, Ast, Node};
pub use convert::{from_ast, parse};
pub use error::{DockerfileError, ExpandError};
pub use model::*;
pub use shell_lex::{EmptyEnv, Env, Expansion, ShellLex};
