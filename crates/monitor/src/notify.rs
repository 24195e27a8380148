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
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Notifier::Webhook {
            authority: authority.to_owned(),
            path: path.to_owned(),
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
    pub(crate) async fn deliver(&self, n: &Notification) -> Result<(), String> {
        let payload = n.alertmanager_json();
        match self {
            Notifier::Command { program, args } => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args)
                    .env("FORKYARD_ALERT_STATUS", n.status)
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
                let mut child = launch.spawn().map_err(|e| format!("cannot start: {e}"))?;
                let exit = child.wait().await.map_err(|e| e.to_string())?;
                if exit.success() {
                    Ok(())
                } else {
                    Err(exit.to_string())
                }
            }
            Notifier::Webhook { authority, path } => {
                tokio::time::timeout(DELIVERY_TIMEOUT, post(authority, path, payload))
                    .await
                    .map_err(|_| format!("no answer within {DELIVERY_TIMEOUT:?}"))?
            }
        }
    }
}

async fn post(authority: &str, path: &str, body: String) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
    .await;
    conn.abort();
    result
}

/// One alert changing state, as sent to the notifiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Notification {
    /// `firing` or `resolved`.
    pub(crate) status: &'static str,
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
        ] {
            assert!(Notifier::webhook(bad).is_err(), "{bad}");
        }
    }
}
