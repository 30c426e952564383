//! A writer of daemon configuration files: `[service]`, `[defaults]` and `[[workload]]`
//! tables as key/value lines, values given as TOML (strings through [`quote`]).

use std::path::{Path, PathBuf};

/// A TOML basic string holding `s`.
pub fn quote(s: impl AsRef<str>) -> String {
    let mut out = String::from('"');
    for c in s.as_ref().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One table's key/value lines, in order.
#[derive(Debug, Clone, Default)]
pub struct Table(Vec<(String, String)>);

impl Table {
    /// Sets `key` to `toml` (a TOML value: `"2s"` quoted, `4`, `true`), replacing it.
    pub fn set(&mut self, key: &str, toml: impl Into<String>) -> &mut Table {
        let toml = toml.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = toml,
            None => self.0.push((key.to_owned(), toml)),
        }
        self
    }

    /// Sets `key` to the string `value`.
    pub fn str(&mut self, key: &str, value: impl AsRef<str>) -> &mut Table {
        self.set(key, quote(value))
    }

    fn render(&self, header: &str, out: &mut String) {
        out.push_str(header);
        out.push('\n');
        for (k, v) in &self.0 {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
}

/// A configuration file being written.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// `[service]`.
    pub service: Table,
    /// `[defaults]`.
    pub defaults: Table,
    /// Each `[[workload]]`.
    pub workloads: Vec<Table>,
}

impl ConfigFile {
    /// A `[service]` writing statuses to `status_dir`, the admin API on an ephemeral port of
    /// 127.0.0.1, `log_level = "info"`, and short `[defaults]` (requests time out after
    /// 2 s, connections after 1 s, backoff from 200 ms to 1 s).
    pub fn new(status_dir: &Path) -> ConfigFile {
        let mut c = ConfigFile::default();
        c.service
            .str("status_dir", status_dir.to_string_lossy())
            .str("admin_listen", "127.0.0.1:0")
            .str("log_level", "info");
        c.defaults
            .str("request_timeout", "2s")
            .str("connect_timeout", "1s")
            .str("backoff_initial", "200ms")
            .str("backoff_max", "1s");
        c
    }

    /// Adds a `refresh_token` workload `name` of `client_id` at `token_url`, its client
    /// secret and refresh token in the files named; returns its table for more keys.
    pub fn refresh_workload(
        &mut self,
        name: &str,
        token_url: &str,
        client_id: &str,
        client_secret_file: &str,
        refresh_token_file: &str,
    ) -> &mut Table {
        let mut t = Table::default();
        t.str("name", name)
            .str("token_url", token_url)
            .str("client_id", client_id)
            .str("client_secret_file", client_secret_file)
            .str("grant", "refresh_token")
            .str("refresh_token_file", refresh_token_file);
        self.workloads.push(t);
        self.workloads.last_mut().expect("just pushed")
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.service.render("[service]", &mut out);
        out.push('\n');
        self.defaults.render("[defaults]", &mut out);
        for w in &self.workloads {
            out.push('\n');
            w.render("[[workload]]", &mut out);
        }
        out
    }

    /// Writes the file to `path`; returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        crate::fs::write(path, &self.text());
        path.to_owned()
    }
}
