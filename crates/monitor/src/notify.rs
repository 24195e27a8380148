//! Where alert notifications go: a command, or a webhook that takes
//! Alertmanager's webhook payload.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Serialize;

use crate::error::MonitorError;
use crate::state::unix_ms_to_rfc3339;

/// How long one delivery may take (connect, send, answer; or the command's run).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A receiver of alert notifications (each firing and each resolution).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notifier {
    /// Runs `program` with `args` (no shell), with the alert in environment
    /// variables: `FORKYARD_ALERT_STATUS` (`firing` or `resolved`),
    /// `FORKYARD_ALERT_NAME`, `FORKYARD_ALERT_SUBJECT`,
    /// `FORKYARD_ALERT_SUMMARY`, and `FORKYARD_ALERT_JSON` (the webhook
    /// payload). Owned by forkyard-child: killed after 10 s.
    Command {
        /// An absolute path (no PATH search).
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// POSTs Alertmanager's webhook payload (version 4) as JSON to a plain
    /// `http://host:port/path` URL (no TLS: keep it on the machine or behind
    /// a proxy).
    Webhook {
        /// Host (name or address) and port.
        authority: String,
        /// The path, `/` at least.
        path: String,
    },
}

impl Notifier {
    /// A command notifier.
    pub fn command(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Notifier {
        Notifier::Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// A webhook notifier for `url` (`http://host:port/path`).
    pub fn webhook(url: &str) -> Result<Notifier, MonitorError> {
        let bad = || MonitorError::InvalidWebhook(url.to_owned());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme() != Some(&hyper::http::uri::Scheme::HTTP) {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        // An explicit port (it says where Alertmanager-style receivers
        // listen), a host, and no user info.
        if authority.host().is_empty()
            || authority.port_u16().is_none()
            || authority.as_str().contains('@')
        {
            return Err(bad());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Notifier::Webhook {
            authority: authority.as_str().to_owned(),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
        })
    }

    /// Where it sends, for the event log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Notifier::Command { program, .. } => format!("command {}", program.display()),
            Notifier::Webhook { authority, path } => format!("webhook http://{authority}{path}"),
        }
    }

    /// Sends one notification; `Err` says why it was not delivered.
    pub(crate) async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        let payload = n.alertmanager_json();
        match self {
            Notifier::Command { program, args } => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args)
                    .env("FORKYARD_ALERT_STATUS", n.status.as_str())
                    .env("FORKYARD_ALERT_NAME", &n.rule)
                    .env("FORKYARD_ALERT_SUBJECT", &n.subject)
                    .env("FORKYARD_ALERT_SUMMARY", &n.summary)
                    .env("FORKYARD_ALERT_JSON", &payload);
                let launch = forkyard_child::Launch::new(cmd)
                    .stdin(forkyard_child::Input::Null)
                    .stdout(forkyard_child::Output::null())
                    .stderr(forkyard_child::Output::null())
                    .timeout(DELIVERY_TIMEOUT)
                    .grace(Duration::from_secs(1));
                let mut child = launch.spawn().map_err(NotifyError::Spawn)?;
                let exit = child.wait().await.map_err(NotifyError::Wait)?;
                if exit.success() {
                    Ok(())
                } else {
                    Err(NotifyError::CommandFailed(exit.to_string()))
                }
            }
            Notifier::Webhook { authority, path } => {
                tokio::time::timeout(DELIVERY_TIMEOUT, post(authority, path, payload))
                    .await
                    .map_err(|_| NotifyError::Timeout(DELIVERY_TIMEOUT))?
            }
        }
    }
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// The command could not be started.
    #[error("cannot start the command")]
    Spawn(#[source] forkyard_child::Error),
    /// Waiting for the command failed.
    #[error("cannot wait for the command")]
    Wait(#[source] forkyard_child::Error),
    /// The command ran and did not succeed (how it ended).
    #[error("the command {0}")]
    CommandFailed(String),
    /// The webhook's host did not take the connection.
    #[error("cannot connect to {authority}")]
    Connect {
        /// Host and port.
        authority: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be built.
    #[error("cannot build the request")]
    Request(#[source] hyper::http::Error),
    /// HTTP failed (the handshake, or sending and reading the answer).
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// The webhook answered with a status other than 2xx.
    #[error("answered {0}")]
    Status(hyper::StatusCode),
    /// No answer (or the command did not end) in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl NotifyError {
    /// The error and its causes, `: `-separated, for the event log.
    pub(crate) fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        out
    }
}

async fn post(authority: &str, path: &str, body: String) -> Result<(), NotifyError> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|source| NotifyError::Connect {
            authority: authority.to_owned(),
            source,
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(NotifyError::Http)?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(NotifyError::Request)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(NotifyError::Http)?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Status(status))
        }
    }
    .await;
    conn.abort();
    result
}

/// What a notification says happened, named as Alertmanager names it in its
/// webhook payload (`firing`, `resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NotificationStatus {
    /// The alert started firing.
    Firing,
    /// The alert fired, and its condition no longer holds.
    Resolved,
}

impl NotificationStatus {
    /// `firing` or `resolved`, as in the payload.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert changing state, as sent to the notifiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Notification {
    /// Firing or resolved.
    pub(crate) status: NotificationStatus,
    pub(crate) rule: String,
    pub(crate) subject: String,
    pub(crate) summary: String,
    pub(crate) value: f64,
    pub(crate) starts_at_ms: u64,
    pub(crate) ends_at_ms: Option<u64>,
}

impl Notification {
    /// Alertmanager's webhook payload (version 4), so existing receivers
    /// (and Alertmanager-shaped tools) take it as is.
    pub(crate) fn alertmanager_json(&self) -> String {
        let labels = serde_json::json!({
            "alertname": self.rule,
            "subject": self.subject,
            "source": "forkyard-monitor",
        });
        serde_json::json!({
            "version": "4",
            "receiver": "forkyard-monitor",
            "status": self.status,
            "groupKey": format!("{}:{}", self.rule, self.subject),
            "groupLabels": {"alertname": self.rule},
            "commonLabels": labels,
            "commonAnnotations": {"summary": self.summary},
            "alerts": [{
                "status": self.status,
                "labels": labels,
                "annotations": {"summary": self.summary, "value": self.value.to_string()},
                "startsAt": unix_ms_to_rfc3339(self.starts_at_ms),
                "endsAt": self.ends_at_ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), unix_ms_to_rfc3339),
            }],
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        assert_eq!(
            Notifier::webhook("http://127.0.0.1:9093/hook").unwrap(),
            Notifier::Webhook {
                authority: "127.0.0.1:9093".into(),
                path: "/hook".into()
            }
        );
        assert_eq!(
            Notifier::webhook("http://localhost:80").unwrap(),
            Notifier::Webhook {
                authority: "localhost:80".into(),
                path: "/".into()
            }
        );
        for bad in [
            "https://x:1/",
            "http://nohost/",
            "http://:80/",
            "http://h:99999/",
            "ftp://h:1/",
            "http://u@h:1/",
            "not a url",
        ] {
            assert!(Notifier::webhook(bad).is_err(), "{bad}");
        }
    }
}
