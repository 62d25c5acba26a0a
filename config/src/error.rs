//! Configuration errors: the file, line and key, what is wrong, and what to do; and the
//! context (source text, file name) that turns a span in the file into a line.

use std::fmt;

/// A configuration error: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when read from one.
    pub file: Option<String>,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key path, like `service[0].backend[2].weight`.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        match self.line {
            Some(l) => write!(f, "{file}:{l}: ")?,
            None => write!(f, "{file}: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A rule the model breaks: which key, what is wrong, what to do. Checks on the model
/// return it; the file layer adds where the key is ([`Spans`]), a live change has no line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) key: String,
    pub(crate) message: String,
    pub(crate) fix: String,
}

/// An [`Invalid`] as a result.
pub(crate) fn invalid<T>(
    key: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Result<T, Invalid> {
    Err(Invalid {
        key: key.into(),
        message: message.into(),
        fix: fix.into(),
    })
}

impl From<Invalid> for ConfigError {
    /// A broken rule found in a configuration that came from no file (a live change).
    fn from(e: Invalid) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: e.key,
            message: e.message,
            fix: e.fix,
        }
    }
}

/// Where each key of a file is, recorded while it is read, so that a check on the model can
/// name the line of the value it refuses.
#[derive(Debug, Default)]
pub(crate) struct Spans(std::collections::HashMap<String, std::ops::Range<usize>>);

impl Spans {
    pub(crate) fn put(&mut self, key: impl Into<String>, span: std::ops::Range<usize>) {
        self.0.insert(key.into(), span);
    }

    /// The span of `key`, or of the nearest key enclosing it that the file has.
    pub(crate) fn find(&self, mut key: &str) -> Option<std::ops::Range<usize>> {
        loop {
            if let Some(s) = self.0.get(key) {
                return Some(s.clone());
            }
            key = &key[..key.rfind('.')?];
        }
    }
}

/// Collects context (source text, file name) for error construction.
pub(crate) struct Ctx<'a> {
    pub(crate) src: &'a str,
    pub(crate) file: Option<&'a str>,
}

impl Ctx<'_> {
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.src
            .get(..offset)
            .map_or(1, |s| s.matches('\n').count() + 1)
    }
    /// `e`, placed at the line of its key in this file.
    pub(crate) fn locate(&self, e: Invalid, spans: &Spans) -> ConfigError {
        ConfigError {
            file: self.file.map(str::to_owned),
            line: spans.find(&e.key).map(|s| self.line_of(s.start)),
            key: e.key,
            message: e.message,
            fix: e.fix,
        }
    }

    pub(crate) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.map(str::to_owned),
            line: Some(self.line_of(span.start)),
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        })
    }
}
