//! People and access: roles and states, passwords, tokens, sign-in and sessions, first-run
//! setup. Who may call what is decided by [`crate::auth`]; this module holds the accounts
//! themselves and their HTTP routes.

pub mod admin;
pub mod admin_cli;
pub mod api_keys;
pub mod context;
pub mod email;
pub mod invites;
pub mod password;
pub mod preferences;
pub mod routes;
pub mod setup;
pub mod tokens;
pub mod totp;
pub mod workspace;

use std::fmt;
use std::str::FromStr;

/// What a user may administer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Active,
    Suspended,
    Denied,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Role::Admin | Role::Owner)
    }
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Suspended => "suspended",
            State::Denied => "denied",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(()),
        }
    }
}

impl FromStr for State {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(State::Pending),
            "active" => Ok(State::Active),
            "suspended" => Ok(State::Suspended),
            "denied" => Ok(State::Denied),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
