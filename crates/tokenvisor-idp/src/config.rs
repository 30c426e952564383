//! Server and client configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How `expires_in` appears in a token response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiresInShape {
    /// A JSON number: `"expires_in": 3600` (the RFC 6749 form).
    #[default]
    Number,
    /// A JSON string: `"expires_in": "3600"` (seen in the wild).
    String,
    /// No `expires_in` member at all.
    Omit,
}

/// The shape of a successful token response, to exercise a client's lenient parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenShape {
    /// How `expires_in` is sent.
    #[serde(default)]
    pub expires_in: ExpiresInShape,
    /// The `token_type` value, sent as is (`"Bearer"`, `"bearer"`, `"BEARER"`...).
    #[serde(default = "default_token_type")]
    pub token_type: String,
}

fn default_token_type() -> String {
    "Bearer".to_owned()
}

impl Default for TokenShape {
    fn default() -> Self {
        Self {
            expires_in: ExpiresInShape::Number,
            token_type: default_token_type(),
        }
    }
}

/// Server-wide settings for [`IdpServer::start`](crate::IdpServer::start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpConfig {
    /// Where to listen. Must be a loopback address; port 0 (the default) picks a free port.
    pub listen: SocketAddr,
    /// Access-token lifetime for clients that do not set their own (default one hour).
    pub access_token_lifetime: Duration,
    /// Token response shape for clients that do not set their own.
    pub token_shape: TokenShape,
}

impl Default for IdpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            access_token_lifetime: Duration::from_secs(3600),
            token_shape: TokenShape::default(),
        }
    }
}

impl IdpConfig {
    /// Sets the listen address (must be loopback).
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the default access-token lifetime.
    #[must_use]
    pub fn with_access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_token_lifetime = lifetime;
        self
    }

    /// Sets the default token response shape.
    #[must_use]
    pub fn with_token_shape(mut self, shape: TokenShape) -> Self {
        self.token_shape = shape;
        self
    }
}

/// A registered OAuth2 client. Also the JSON body of `POST /admin/clients`
/// (`lifetime` as a humantime string such as `"2s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    /// The client id.
    pub id: String,
    /// The client secret (compared verbatim after form-urldecoding the Basic credentials).
    pub secret: String,
    /// Whether a refresh grant rotates the refresh token (default on). When off, the
    /// response carries no `refresh_token` and the presented one stays valid.
    #[serde(default = "default_rotation")]
    pub rotation: bool,
    /// Access-token lifetime for this client; `None` uses the server's.
    #[serde(default, with = "humantime_serde")]
    pub lifetime: Option<Duration>,
    /// Token response shape for this client; `None` uses the server's.
    #[serde(default)]
    pub token_shape: Option<TokenShape>,
    /// Scope granted by default (echoed as `scope` when a request does not ask for one).
    #[serde(default)]
    pub scope: Option<String>,
}

fn default_rotation() -> bool {
    true
}

impl ClientSpec {
    /// A client with rotation on, the server's lifetime and shape, and no default scope.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
            rotation: true,
            lifetime: None,
            token_shape: None,
            scope: None,
        }
    }

    /// Turns refresh-token rotation on or off.
    #[must_use]
    pub fn with_rotation(mut self, rotation: bool) -> Self {
        self.rotation = rotation;
        self
    }

    /// Sets this client's access-token lifetime.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Sets this client's token response shape.
    #[must_use]
    pub fn with_token_shape(mut self, shape: TokenShape) -> Self {
        self.token_shape = Some(shape);
        self
    }

    /// Sets the scope granted by default.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}
