//! Errors of Dockerfile parsing, validation and word expansion.

/// A Dockerfile that cannot be parsed or validated. `Display` starts with `Dockerfile:LINE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// The Dockerfile has a syntax or validation error at `line`.
    #[error("Dockerfile:{line}: {message}")]
    Syntax {
        /// 1-based line of the offending instruction (0 when the whole file is at fault).
        line: usize,
        /// What is wrong and what to do, lower case.
        message: String,
    },
    /// `COPY --from` (or `FROM`) names a stage that does not exist (yet) in this Dockerfile.
    #[error("Dockerfile:{line}: unknown stage {name:?}: define it with `FROM ... AS {name}` before line {line}")]
    UnknownStage {
        /// 1-based line of the instruction.
        line: usize,
        /// The stage name as written.
        name: String,
    },
    /// Word expansion failed (e.g. `${VAR:?message}` with VAR unset, bad substitution).
    #[error("Dockerfile:{line}: {source}")]
    Expansion {
        /// 1-based line of the instruction.
        line: usize,
        /// The expansion failure.
        source: ExpandError,
    },
}

impl DockerfileError {
    /// Builds a [`DockerfileError::Syntax`].
    pub fn syntax(line: usize, message: impl Into<String>) -> Self {
        DockerfileError::Syntax {
            line,
            message: message.into(),
        }
    }

    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match self {
            DockerfileError::Syntax { line, .. }
            | DockerfileError::UnknownStage { line, .. }
            | DockerfileError::Expansion { line, .. } => *line,
        }
    }
}

/// A word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${VAR:?msg}` / `${VAR?msg}` with VAR unset (or empty for `:?`).
    #[error("{name}: {message}")]
    Required {
        /// The variable name.
        name: String,
        /// The message given after `?` (or a default one).
        message: String,
    },
    /// Malformed expansion syntax (missing `}`, bad modifier, unterminated quote...).
    #[error("{0}")]
    Syntax(String),
}
