//! Reading the raw layers — defaults < TOML file < environment (`CAIRN_*`, after the
//! conventional aliases) < `CAIRN_*_FILE` secret files < flags — into one map of text values,
//! each remembering the layer that set it. Nothing here writes a file or reads the process
//! environment directly: the caller passes the environment in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::spec::{self, Kind, Setting, SETTINGS};

/// The layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    SecretFile { var: String, path: PathBuf },
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::SecretFile { var, path } => write!(f, "secret file {var}={}", path.display()),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A problem with one setting, naming the layer that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub source: Source,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {}): {}", self.key, self.source, self.message)
    }
}

/// What the command line and the process hand to the loader.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The process environment (or a test's).
    pub env: BTreeMap<String, String>,
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// Flags: (dotted key, value, the flag as typed, e.g. `--listen`).
    pub flags: Vec<(String, String, String)>,
}

impl Inputs {
    /// Inputs from this process's environment.
    pub fn from_process_env() -> Self {
        Self {
            env: std::env::vars().collect(),
            ..Self::default()
        }
    }
}

/// Every setting's raw text and where it came from. Its `Debug` shows sources, never values
/// (they include secrets).
#[derive(Clone)]
pub struct RawValues {
    values: BTreeMap<&'static str, (String, Source)>,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
}

impl fmt::Debug for RawValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.iter().map(|(k, (_, source))| (k, source)))
            .finish()
    }
}

impl RawValues {
    pub fn get(&self, key: &str) -> (&str, &Source) {
        match self.values.get(key) {
            Some((v, s)) => (v.as_str(), s),
            None => ("", &Source::Default),
        }
    }

    fn set(&mut self, setting: &'static Setting, value: String, source: Source) {
        self.values.insert(setting.key, (value, source));
    }
}

const ENV_PREFIX: &str = "CAIRN_";
/// Variables with the prefix that are not settings.
const ENV_META: &[&str] = &["CAIRN_CONFIG"];
/// Prefixes of variables for Cairn's tools rather than the server.
const ENV_IGNORED_PREFIXES: &[&str] = &["CAIRN_TEST_", "CAIRN_BENCH_", "CAIRN_SERVICES_"];

/// Read every layer. Returns the values read and all problems found, not just the first.
pub fn read_layers(inputs: &Inputs) -> (RawValues, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut raw = RawValues {
        values: SETTINGS
            .iter()
            .map(|s| (s.key, (s.default.to_owned(), Source::Default)))
            .collect(),
        file: None,
    };

    // Which file: --config, else CAIRN_CONFIG, else <data dir>/cairn.toml when it exists. The
    // data dir for that lookup comes from the layers above the file.
    let explicit = inputs
        .config_file
        .clone()
        .map(|p| (p, Source::Flag("--config".into())))
        .or_else(|| {
            inputs
                .env
                .get("CAIRN_CONFIG")
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), Source::Env("CAIRN_CONFIG".into())))
        });
    let file = match explicit {
        Some((path, source)) => Some((path, Some(source))),
        None => {
            let data_dir = data_dir_before_file(inputs);
            let candidate = Path::new(&data_dir).join("cairn.toml");
            candidate.is_file().then_some((candidate, None))
        }
    };
    if let Some((path, named_by)) = file {
        match std::fs::read_to_string(&path) {
            Ok(text) => read_file(&path, &text, &mut raw, &mut errors),
            Err(e) => errors.push(ConfigError {
                key: "config".into(),
                source: named_by.unwrap_or(Source::Default),
                message: format!("cannot read configuration file {}: {e}", path.display()),
            }),
        }
        raw.file = Some(path);
    }

    read_env(&inputs.env, &mut raw, &mut errors);

    for (key, value, flag) in &inputs.flags {
        match spec::find(key) {
            Some(setting) => raw.set(setting, value.clone(), Source::Flag(flag.clone())),
            None => errors.push(ConfigError {
                key: key.clone(),
                source: Source::Flag(flag.clone()),
                message: unknown_key_message(key),
            }),
        }
    }

    (raw, errors)
}

fn data_dir_before_file(inputs: &Inputs) -> String {
    let from_flag = inputs
        .flags
        .iter()
        .rev()
        .find(|(k, _, _)| k == "data_dir")
        .map(|(_, v, _)| v.clone());
    from_flag
        .or_else(|| inputs.env.get("CAIRN_DATA_DIR").cloned())
        .unwrap_or_else(|| {
            spec::find("data_dir")
                .map(|s| s.default)
                .unwrap_or_default()
                .into()
        })
}

fn read_file(path: &Path, text: &str, raw: &mut RawValues, errors: &mut Vec<ConfigError>) {
    let source = Source::File(path.to_owned());
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                key: "config".into(),
                source,
                message: format!("not valid TOML: {}", e.message()),
            });
            return;
        }
    };
    flatten_table("", &table, &source, raw, errors);
}

fn flatten_table(
    prefix: &str,
    table: &toml::Table,
    source: &Source,
    raw: &mut RawValues,
    errors: &mut Vec<ConfigError>,
) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let toml::Value::Table(inner) = value {
            if spec::find(&key).is_none() {
                flatten_table(&key, inner, source, raw, errors);
                continue;
            }
        }
        let Some(setting) = spec::find(&key) else {
            errors.push(ConfigError {
                key: key.clone(),
                source: source.clone(),
                message: unknown_key_message(&key),
            });
            continue;
        };
        match toml_to_text(setting, value) {
            Ok(text) => raw.set(setting, text, source.clone()),
            Err(message) => errors.push(ConfigError {
                key,
                source: source.clone(),
                message,
            }),
        }
    }
}

fn toml_to_text(setting: &Setting, value: &toml::Value) -> Result<String, String> {
    use toml::Value as V;
    match (setting.kind, value) {
        (Kind::List, V::Array(items)) => items
            .iter()
            .map(|item| match item {
                V::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "list items must be strings, got {}",
                    other.type_str()
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        (_, V::String(s)) => Ok(s.clone()),
        (Kind::Integer | Kind::Decimal, V::Integer(i)) => Ok(i.to_string()),
        (Kind::Decimal, V::Float(f)) => Ok(f.to_string()),
        (Kind::Bool, V::Boolean(b)) => Ok(b.to_string()),
        (kind, other) => Err(format!(
            "expected {}, got a TOML {}",
            kind_name(kind),
            other.type_str()
        )),
    }
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text | Kind::Secret | Kind::CredentialUrl | Kind::Choice(_) => "a string",
        Kind::Integer => "a whole number",
        Kind::Decimal => "a number",
        Kind::Bool => "true or false",
        Kind::List => "a list of strings",
    }
}

fn read_env(env: &BTreeMap<String, String>, raw: &mut RawValues, errors: &mut Vec<ConfigError>) {
    // Conventional aliases first, so that CAIRN_* wins when both are set.
    for setting in SETTINGS {
        for alias in setting.aliases {
            if let Some(v) = env.get(*alias).filter(|v| !v.is_empty()) {
                raw.set(setting, v.clone(), Source::Env((*alias).to_owned()));
            }
        }
    }
    for (var, value) in env {
        let Some(_) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_META.contains(&var.as_str())
            || ENV_IGNORED_PREFIXES.iter().any(|p| var.starts_with(p))
        {
            continue;
        }
        if let Some(setting) = SETTINGS.iter().find(|s| s.env_var() == *var) {
            raw.set(setting, value.clone(), Source::Env(var.clone()));
        } else if SETTINGS
            .iter()
            .any(|s| s.file_var().as_deref() == Some(var))
        {
            // Read below, after every plain variable, so the file wins.
        } else {
            errors.push(ConfigError {
                key: var.clone(),
                source: Source::Env(var.clone()),
                message: unknown_env_message(var),
            });
        }
    }
    for setting in SETTINGS {
        let Some(file_var) = setting.file_var() else {
            continue;
        };
        let Some(path) = env.get(&file_var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let path = PathBuf::from(path);
        let source = Source::SecretFile {
            var: file_var.clone(),
            path: path.clone(),
        };
        match std::fs::read_to_string(&path) {
            Ok(contents) => raw.set(setting, contents.trim_end().to_owned(), source),
            Err(e) => errors.push(ConfigError {
                key: setting.key.into(),
                source,
                message: format!("cannot read the secret file: {e}"),
            }),
        }
    }
}

fn unknown_key_message(key: &str) -> String {
    let suggestion = closest(key, SETTINGS.iter().map(|s| s.key.to_owned()));
    match suggestion {
        Some(s) => format!("unknown setting; did you mean `{s}`?"),
        None => "unknown setting (see `cairn config reference`)".into(),
    }
}

fn unknown_env_message(var: &str) -> String {
    let candidates = SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.env_var()).chain(s.file_var()));
    match closest(var, candidates) {
        Some(s) => format!("unknown setting; did you mean {s}?"),
        None => "unknown setting: variables starting with CAIRN_ must name a setting \
                 (see `cairn config reference`)"
            .into(),
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to be a typo.
fn closest(word: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    candidates
        .map(|c| (edit_distance(word, &c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
