//! `[service]`: where status files go, the admin API (address, token, limits), logging.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::problems::Cx;
use crate::schema::RawService;
use crate::secrets::admin_token_long_enough;
use crate::{AdminLimits, AdminListen, MAX_ADMIN_MAX_CONNECTIONS, ServiceConfig};

pub(crate) fn resolve_service(
    cx: &mut Cx,
    raw: RawService,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> ServiceConfig {
    let status_dir = match &raw.status_dir {
        Some(s) => nonempty_path(cx, "service.status_dir", s, base),
        None if cx.is_broken("service.status_dir") => PathBuf::new(),
        None => default_status_dir(env).unwrap_or_else(|| {
            cx.problem(
                "service.status_dir".into(),
                None,
                "not set, and neither XDG_DATA_HOME nor HOME is set to derive the default \
                 ($XDG_DATA_HOME/tokenvisor/statuses or $HOME/.local/share/tokenvisor/statuses)",
            );
            PathBuf::new()
        }),
    };

    let admin_listen = match &raw.admin_listen {
        None => AdminListen::default(),
        Some(s) if s.get_ref() == "off" => AdminListen::Off,
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => AdminListen::Addr(a),
            Err(_) => {
                cx.problem(
                    "service.admin_listen".into(),
                    Some(s.span()),
                    format!(
                        "{:?} is neither \"off\" nor a socket address such as \"127.0.0.1:7878\" \
                         or \"[::1]:7878\" (host names are not resolved)",
                        s.get_ref()
                    ),
                );
                AdminListen::Off
            }
        },
    };

    let admin_token_file = raw.admin_token_file.as_ref().map(|f| {
        let path = nonempty_path(cx, "service.admin_token_file", f, base);
        if !f.get_ref().is_empty()
            && admin_listen != AdminListen::Off
            && let Err(reason) = cx
                .secret_file("service.admin_token_file", f.span(), &path)
                .and_then(|token| admin_token_long_enough(&path, token))
        {
            cx.problem("service.admin_token_file".into(), Some(f.span()), reason);
        }
        path
    });
    let state_dir = resolve_state_dir(cx, &raw, base, env, admin_listen, &admin_token_file);
    let admin_limits = resolve_admin_limits(cx, &raw);
    let status_refresh_interval = raw
        .status_refresh_interval
        .as_ref()
        .and_then(|v| {
            cx.duration(
                "service.status_refresh_interval".into(),
                v,
                false,
                (
                    Duration::from_secs(3600),
                    "a status file may show timestamps at most an hour old",
                ),
            )
        })
        .unwrap_or(crate::spec::DEFAULT_STATUS_REFRESH_INTERVAL);

    if let AdminListen::Addr(addr) = admin_listen
        && !addr.ip().is_loopback()
        && admin_token_file.is_none()
        && !cx.is_broken("service.admin_token_file")
    {
        cx.problem(
            "service.admin_listen".into(),
            raw.admin_listen.as_ref().map(Spanned::span),
            format!(
                "{addr} is not a loopback address, so service.admin_token_file is required \
                 (the admin API can hand out access tokens)"
            ),
        );
    }

    let log_level = match raw.log_level {
        Some(s) if s.get_ref().trim().is_empty() => {
            cx.problem(
                "service.log_level".into(),
                Some(s.span()),
                "must not be empty (e.g. \"info\" or \"info,tokenvisor=debug\")",
            );
            String::new()
        }
        Some(s) => s.into_inner(),
        None => "info".to_owned(),
    };

    ServiceConfig {
        status_dir,
        admin_listen,
        admin_token_file,
        state_dir,
        admin_limits,
        status_refresh_interval,
        log_format: raw.log_format.map(Spanned::into_inner).unwrap_or_default(),
        log_level,
    }
}

/// `service.state_dir`: as set, else `$XDG_STATE_HOME/tokenvisor`, else
/// `$HOME/.local/state/tokenvisor`. Needed (a problem when it cannot be derived) only when
/// the daemon generates the admin token: the admin API is on and `admin_token_file` unset.
fn resolve_state_dir(
    cx: &mut Cx,
    raw: &RawService,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    admin_listen: AdminListen,
    admin_token_file: &Option<PathBuf>,
) -> Option<PathBuf> {
    match &raw.state_dir {
        Some(s) => Some(nonempty_path(cx, "service.state_dir", s, base)),
        None => {
            let derived = default_state_dir(env);
            if derived.is_none() && admin_listen != AdminListen::Off && admin_token_file.is_none() {
                cx.problem(
                    "service.state_dir".into(),
                    None,
                    "not set, and neither XDG_STATE_HOME nor HOME is set to derive the default \
                     ($XDG_STATE_HOME/tokenvisor or $HOME/.local/state/tokenvisor); it is where \
                     the generated admin token is kept (set state_dir or admin_token_file)",
                );
            }
            derived
        }
    }
}

/// The default `service.state_dir`: `$XDG_STATE_HOME/tokenvisor`, else
/// `$HOME/.local/state/tokenvisor`; `None` when neither variable is usable.
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    xdg_dir(env, "XDG_STATE_HOME", "state")
}

/// The default `service.status_dir`: `$XDG_DATA_HOME/tokenvisor/statuses`, else
/// `$HOME/.local/share/tokenvisor/statuses`; `None` when neither variable is usable.
pub fn default_status_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    Some(xdg_dir(env, "XDG_DATA_HOME", "share")?.join("statuses"))
}

/// `$<var>/tokenvisor`, else `$HOME/.local/<home_dir>/tokenvisor`; `None` when neither
/// variable is usable. A relative or empty `$<var>` is ignored, as the XDG base directory
/// spec says.
fn xdg_dir(env: &dyn Fn(&str) -> Option<String>, var: &str, home_dir: &str) -> Option<PathBuf> {
    let dir = env(var)
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local").join(home_dir))
        })?;
    Some(dir.join("tokenvisor"))
}

/// `service.admin_header_timeout`, `admin_idle_timeout`, `admin_max_connections`.
fn resolve_admin_limits(cx: &mut Cx, raw: &RawService) -> AdminLimits {
    let mut limits = AdminLimits::default();
    for (key, value, slot) in [
        (
            "service.admin_header_timeout",
            raw.admin_header_timeout.as_ref(),
            &mut limits.header_timeout,
        ),
        (
            "service.admin_idle_timeout",
            raw.admin_idle_timeout.as_ref(),
            &mut limits.idle_timeout,
        ),
    ] {
        let limit = (
            Duration::from_secs(3600),
            "the admin API waits no longer for a client",
        );
        if let Some(d) = value.and_then(|v| cx.duration(key.into(), v, true, limit)) {
            *slot = d;
        }
    }
    if let Some(v) = &raw.admin_max_connections {
        let rule = format!("must be between 1 and {MAX_ADMIN_MAX_CONNECTIONS}");
        let key = "service.admin_max_connections".into();
        if let Some(n) = cx.count(key, v, MAX_ADMIN_MAX_CONNECTIONS, &rule) {
            limits.max_connections = n;
        }
    }
    limits
}

/// `path` against `base` (unless absolute), without `.` components.
pub(crate) fn resolve_path(base: &Path, path: &str) -> PathBuf {
    base.join(path).components().collect()
}

/// `raw` (the path at `key`) against `base`; an empty one is reported.
fn nonempty_path(cx: &mut Cx, key: &str, raw: &Spanned<String>, base: &Path) -> PathBuf {
    if raw.get_ref().is_empty() {
        cx.problem(key.into(), Some(raw.span()), "must not be empty");
    }
    resolve_path(base, raw.get_ref())
}
