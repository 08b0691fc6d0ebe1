//! DoAction: the action names the server understands and the `health` answer.

use serde::{Deserialize, Serialize};

/// An action of DoAction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionName {
    /// Drop the discovery cache and discover again; answers `{"tables": N}`.
    Refresh,
    /// Check the database; answers a [`Health`].
    Health,
    /// Server figures as JSON.
    Stats,
}

impl ActionName {
    /// Every action, in ListActions order.
    pub const ALL: [ActionName; 3] = [ActionName::Refresh, ActionName::Health, ActionName::Stats];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::Refresh => "refresh",
            ActionName::Health => "health",
            ActionName::Stats => "stats",
        }
    }

    /// ListActions' description.
    pub fn description(self) -> &'static str {
        match self {
            ActionName::Refresh => "Drop the discovery cache and discover again; returns the table count.",
            ActionName::Health => "Check the database connection and discovery; returns status (ok or degraded, with the reason) and TimescaleDB version.",
            ActionName::Stats => "Server figures as JSON.",
        }
    }

    /// The action of a wire name.
    pub fn parse(name: &str) -> Option<ActionName> {
        ActionName::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Whether the server serves as designed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Database reachable, discovery complete.
    Ok,
    /// Serving, but with a fallback in force (`reason` says which).
    Degraded,
}

/// The answer to `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// ok or degraded.
    pub status: HealthStatus,
    /// The installed TimescaleDB version, if any.
    pub timescaledb: Option<String>,
    /// Why the status is degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
