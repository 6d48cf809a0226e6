//! Policy problems, each located at `file:line:column`.
use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// One problem in a policy file. `line` and `column` are 1-based; both are 0
/// for problems that concern the whole file (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl PolicyError {
    /// A problem at byte offset `offset` of `src`.
    pub fn at(file: &Path, src: &str, offset: usize, message: impl Into<String>) -> PolicyError {
        let (line, column) = line_column(src, offset);
        PolicyError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A problem with the whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy, in file order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    pub errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub fn new(mut errors: Vec<PolicyError>) -> PolicyErrors {
        errors.sort_by_key(|e| (e.line, e.column));
        PolicyErrors { errors }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// 1-based line and column (in characters) of byte offset `offset`.
pub(crate) fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Collects problems while a policy is checked.
pub(crate) struct Diagnostics<'a> {
    pub file: &'a Path,
    pub src: &'a str,
    pub errors: Vec<PolicyError>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Diagnostics {
            file,
            src,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.errors
            .push(PolicyError::at(self.file, self.src, span.start, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 4), (1, 5));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, src.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(src, src.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_column(src, 999), (3, 1));
    }

    #[test]
    fn display() {
        let p = Path::new("/etc/metaguard.toml");
        let errs = PolicyErrors::new(vec![
            PolicyError::at(p, "x\ny", 2, "second"),
            PolicyError::at(p, "x\ny", 0, "first"),
        ]);
        assert_eq!(
            errs.to_string(),
            "/etc/metaguard.toml:1:1: first\n/etc/metaguard.toml:2:1: second"
        );
        let e = PolicyError::file(p, "cannot read: No such file or directory (os error 2)");
        assert_eq!(
            e.to_string(),
            "/etc/metaguard.toml: cannot read: No such file or directory (os error 2)"
        );
    }
}
