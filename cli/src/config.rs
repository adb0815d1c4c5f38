//! Where the API URL, the key and the app secret come from: flags, then the environment
//! (both through clap), then the config file, then a local run's `.ctwa/local.json`.
//!
//! The local run's key and secrets are used only against the local run's own URL: a
//! demo key is never sent to another server.

use crate::error::CliError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a config file may hold. `base_url` is accepted for `api_url`, so a local run's
/// `local.json` is a valid config file too. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    #[serde(default, alias = "base_url")]
    pub api_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub app_secret: Option<String>,
}

/// The connection details a local run writes (`ctwa-local`: `.ctwa/local.json`).
#[derive(Debug, Default, Deserialize)]
pub struct LocalRun {
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub app_secret: Option<String>,
    #[serde(default)]
    pub oauth_code: Option<String>,
    #[serde(default)]
    pub phone_number_id: Option<String>,
    #[serde(default)]
    pub waba_id: Option<String>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Where the URL was found, to say so when it cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    FlagOrEnv,
    ConfigFile(PathBuf),
    LocalRun(PathBuf),
}

pub struct Settings {
    pub api_url: Option<(String, Origin)>,
    pub api_key: Option<String>,
    pub app_secret: Option<String>,
    /// The local run's details, when the URL is the local run's.
    pub local: Option<LocalRun>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "app_secret",
                &self.app_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub fn normalize_url(u: &str) -> String {
    u.trim().trim_end_matches('/').to_string()
}

/// Reads a config file: JSON when it starts with `{`, else TOML.
pub fn read_config_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("config file {}: {e}", path.display())))?;
    parse_config(&text)
        .map_err(|e| CliError::Config(format!("config file {}: {e}", path.display())))
}

pub fn parse_config(text: &str) -> Result<FileConfig, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        toml::from_str(text).map_err(|e| format!("invalid TOML: {e}"))
    }
}

/// `$XDG_CONFIG_HOME/ctwa/config.json`, else `~/.config/ctwa/config.json` (or `.toml`),
/// when present.
fn default_config_file() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?
        .join("ctwa");
    ["config.json", "config.toml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// `$CTWA_STATE_DIR/local.json` (where `ctwa-local` writes when that is set), else the
/// first `.ctwa/local.json` in the current directory or one of its parents.
pub fn find_local_run(start: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CTWA_STATE_DIR").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(dir).join("local.json");
        if p.is_file() {
            return Some(p);
        }
    }
    start
        .ancestors()
        .map(|d| d.join(".ctwa").join("local.json"))
        .find(|p| p.is_file())
}

fn read_local_run(path: &Path) -> Option<LocalRun> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut run: LocalRun = serde_json::from_str(&text).ok()?;
    run.path = path.to_path_buf();
    Some(run)
}

/// Merges the sources. `flag_*` are clap's (flag, else environment).
pub fn resolve(
    flag_url: Option<String>,
    flag_key: Option<String>,
    flag_secret: Option<String>,
    config_path: Option<&Path>,
) -> Result<Settings, CliError> {
    let (file, file_path) = match config_path {
        Some(p) => (read_config_file(p)?, Some(p.to_path_buf())),
        None => match default_config_file() {
            Some(p) => (read_config_file(&p)?, Some(p)),
            None => (FileConfig::default(), None),
        },
    };
    let local = std::env::current_dir()
        .ok()
        .and_then(|d| find_local_run(&d))
        .and_then(|p| read_local_run(&p));
    Ok(merge(
        nonempty(flag_url),
        nonempty(flag_key),
        nonempty(flag_secret),
        file,
        file_path,
        local,
    ))
}

pub fn merge(
    flag_url: Option<String>,
    flag_key: Option<String>,
    flag_secret: Option<String>,
    file: FileConfig,
    file_path: Option<PathBuf>,
    local: Option<LocalRun>,
) -> Settings {
    let api_url = flag_url
        .map(|u| (normalize_url(&u), Origin::FlagOrEnv))
        .or_else(|| {
            nonempty(file.api_url).map(|u| {
                (
                    normalize_url(&u),
                    Origin::ConfigFile(file_path.clone().unwrap_or_default()),
                )
            })
        })
        .or_else(|| {
            local.as_ref().and_then(|l| {
                nonempty(l.base_url.clone())
                    .map(|u| (normalize_url(&u), Origin::LocalRun(l.path.clone())))
            })
        });
    // The local run's details only go with its own URL.
    let local = local.filter(
        |l| matches!((&api_url, &l.base_url), (Some((u, _)), Some(b)) if *u == normalize_url(b)),
    );
    let api_key = flag_key
        .or_else(|| nonempty(file.api_key))
        .or_else(|| local.as_ref().and_then(|l| nonempty(l.api_key.clone())));
    let app_secret = flag_secret
        .or_else(|| nonempty(file.app_secret))
        .or_else(|| local.as_ref().and_then(|l| nonempty(l.app_secret.clone())));
    Settings {
        api_url,
        api_key,
        app_secret,
        local,
    }
}

pub const NO_URL: &str = "no API URL configured: pass --api-url, set CTWA_API_URL, put api_url in ~/.config/ctwa/config.json (or --config FILE), or start a local run with scripts/local.sh (it writes .ctwa/local.json)";
pub const NO_KEY: &str = "no API key configured: pass --api-key, set CTWA_API_KEY, or put api_key in ~/.config/ctwa/config.json (or --config FILE)";

#[cfg(test)]
mod tests {
    use super::*;

    fn local(url: &str) -> LocalRun {
        LocalRun {
            base_url: Some(url.into()),
            api_key: Some("local-key".into()),
            app_secret: Some("local-secret".into()),
            path: PathBuf::from("/x/.ctwa/local.json"),
            ..Default::default()
        }
    }

    #[test]
    fn json_and_toml_config() {
        let j = parse_config(r#"{"api_url":"https://a","api_key":"k","other":1}"#).unwrap();
        assert_eq!(j.api_url.as_deref(), Some("https://a"));
        let t = parse_config("api_url = \"https://b\"\napi_key = \"k2\"\n").unwrap();
        assert_eq!(t.api_url.as_deref(), Some("https://b"));
        assert_eq!(t.api_key.as_deref(), Some("k2"));
        let l = parse_config(r#"{"base_url":"http://127.0.0.1:3000"}"#).unwrap();
        assert_eq!(l.api_url.as_deref(), Some("http://127.0.0.1:3000"));
        assert!(parse_config("api_url = ").is_err());
    }

    #[test]
    fn flags_then_file_then_local_run() {
        let file = || FileConfig {
            api_url: Some("https://file/".into()),
            api_key: Some("file-key".into()),
            app_secret: None,
        };
        let s = merge(
            Some("https://flag".into()),
            None,
            None,
            file(),
            None,
            Some(local("http://127.0.0.1:3000")),
        );
        assert_eq!(
            s.api_url.unwrap(),
            ("https://flag".into(), Origin::FlagOrEnv)
        );
        assert_eq!(s.api_key.as_deref(), Some("file-key"));
        assert!(s.local.is_none());

        let s = merge(None, None, None, file(), None, None);
        assert_eq!(s.api_url.unwrap().0, "https://file");

        let s = merge(
            None,
            Some("flag-key".into()),
            None,
            FileConfig::default(),
            None,
            Some(local("http://127.0.0.1:3000/")),
        );
        assert_eq!(s.api_url.as_ref().unwrap().0, "http://127.0.0.1:3000");
        assert_eq!(s.api_key.as_deref(), Some("flag-key"));
        assert_eq!(s.app_secret.as_deref(), Some("local-secret"));
        assert!(s.local.is_some());
    }

    #[test]
    fn the_local_key_never_goes_to_another_url() {
        let s = merge(
            Some("https://prod.example".into()),
            None,
            None,
            FileConfig::default(),
            None,
            Some(local("http://127.0.0.1:3000")),
        );
        assert_eq!(s.api_key, None);
        assert_eq!(s.app_secret, None);
        // ...but with the local URL given explicitly, it is the local run.
        let s = merge(
            Some("http://127.0.0.1:3000".into()),
            None,
            None,
            FileConfig::default(),
            None,
            Some(local("http://127.0.0.1:3000")),
        );
        assert_eq!(s.api_key.as_deref(), Some("local-key"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = merge(
            None,
            Some("ctwa_secretkey".into()),
            Some("appsecret".into()),
            FileConfig::default(),
            None,
            None,
        );
        let d = format!("{s:?}");
        assert!(
            !d.contains("ctwa_secretkey") && !d.contains("appsecret"),
            "{d}"
        );
    }
}
