//! `watchdog cluster --prometheus URL`: the cluster's view from the Prometheus that scrapes
//! every node's watchdog: the node × peer matrix of `watchdog_peer_node_reachable` (each
//! node's probes through the overlay) and the verdict the shipped rules alert on — which
//! Node at least half of the reporting nodes (and at least 2) cannot reach
//! (`WatchdogNodeUnreachableFromPeers`), which node reaches none of its peers
//! (`WatchdogNodeIsolated`). Exit 0: healthy; 1: a verdict; 2: an error.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, Uri, body::Bytes, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// The query: each node's latest evidence about each peer Node, unless older than 2
/// minutes (as `watchdog:peer_node_reachable:fresh` in the shipped rules).
const QUERY: &str = "watchdog_peer_node_reachable unless on(instance, peer_node) \
                     watchdog_peer_node_evidence_age_seconds > 120";
/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One cell of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// The reporting node.
    pub node: String,
    /// The Node it probes.
    pub peer_node: String,
    /// Its probe was answered.
    pub reachable: bool,
}

/// A Node at least half of its reporters (and at least 2) cannot reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    /// The Node.
    pub peer_node: String,
    /// The nodes that cannot reach it.
    pub from: Vec<String>,
    /// How many nodes report on it.
    pub reporting: usize,
}

/// The matrix and the verdict (`--json` prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct View {
    /// Every node and peer Node seen, sorted.
    pub nodes: Vec<String>,
    /// Every (node, peer Node) with evidence.
    pub matrix: Vec<Cell>,
    /// Nodes the others cannot reach.
    pub unreachable: Vec<Unreachable>,
    /// Nodes that report on at least 2 peers and reach none.
    pub isolated: Vec<String>,
}

impl View {
    /// The verdict over `matrix`, with the shipped rules' thresholds.
    pub fn judge(mut matrix: Vec<Cell>) -> Self {
        matrix.sort_by(|a, b| (&a.node, &a.peer_node).cmp(&(&b.node, &b.peer_node)));
        let nodes: BTreeSet<&String> = matrix
            .iter()
            .flat_map(|c| [&c.node, &c.peer_node])
            .collect();
        let mut about: BTreeMap<&str, (Vec<String>, usize)> = BTreeMap::new();
        let mut of: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for cell in &matrix {
            let entry = about.entry(&cell.peer_node).or_default();
            entry.1 += 1;
            if !cell.reachable {
                entry.0.push(cell.node.clone());
            }
            let entry = of.entry(&cell.node).or_default();
            entry.0 += 1;
            entry.1 += usize::from(cell.reachable);
        }
        let unreachable = about
            .into_iter()
            .filter(|(_, (from, reporting))| from.len() >= 2 && from.len() * 2 >= *reporting)
            .map(|(peer, (from, reporting))| Unreachable {
                peer_node: peer.to_owned(),
                from,
                reporting,
            })
            .collect();
        let isolated = of
            .into_iter()
            .filter(|(_, (peers, reached))| *peers >= 2 && *reached == 0)
            .map(|(node, _)| node.to_owned())
            .collect();
        Self {
            nodes: nodes.into_iter().cloned().collect(),
            matrix,
            unreachable,
            isolated,
        }
    }

    /// True when nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.unreachable.is_empty() && self.isolated.is_empty()
    }

    /// The matrix and the verdict as text.
    pub fn render(&self) -> String {
        let width = self.nodes.iter().map(String::len).max().unwrap_or(4).max(4);
        let mut out = String::from(
            "Reachability through the overlay (row: the reporting node, column: the peer Node; \
             ok: answered, NO: not answered, blank: no evidence)\n",
        );
        out.push_str(&format!("{:width$}", ""));
        for peer in &self.nodes {
            out.push_str(&format!("  {peer:>width$}"));
        }
        out.push('\n');
        for node in &self.nodes {
            out.push_str(&format!("{node:width$}"));
            for peer in &self.nodes {
                let mark = if node == peer {
                    "-"
                } else {
                    self.matrix
                        .iter()
                        .find(|c| &c.node == node && &c.peer_node == peer)
                        .map_or("", |c| if c.reachable { "ok" } else { "NO" })
                };
                out.push_str(&format!("  {mark:>width$}"));
            }
            out.push('\n');
        }
        out.push('\n');
        for verdict in &self.unreachable {
            out.push_str(&format!(
                "{} is unreachable from {} of {} nodes: check its Node annotation / its VTEP \
                 (not reached by {})\n",
                verdict.peer_node,
                verdict.from.len(),
                verdict.reporting,
                verdict.from.join(", ")
            ));
        }
        for node in &self.isolated {
            let peers = self.matrix.iter().filter(|c| &c.node == node).count();
            out.push_str(&format!(
                "{node} is isolated: it reaches none of its {peers} peer Nodes: check its \
                 underlay, its VXLAN device and FDB, its own Node annotations\n"
            ));
        }
        if self.healthy() {
            out.push_str(&format!(
                "healthy: no Node is unreachable from half of its peers, no node is isolated \
                 ({} nodes, {} probes answered of {})\n",
                self.nodes.len(),
                self.matrix.iter().filter(|c| c.reachable).count(),
                self.matrix.len()
            ));
        }
        out
    }
}

/// Reads the instant-query answer of [`QUERY`] into cells; the reporting node is the
/// `node` label (the ServiceMonitor sets it), else `instance`.
pub fn cells(answer: &serde_json::Value) -> anyhow::Result<Vec<Cell>> {
    if answer["status"] != "success" {
        bail!(
            "Prometheus answered {}: {}",
            answer["errorType"].as_str().unwrap_or("an error"),
            answer["error"].as_str().unwrap_or("(no message)")
        );
    }
    let result = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| anyhow!("Prometheus answered without a result vector"))?;
    result
        .iter()
        .map(|series| {
            let metric = &series["metric"];
            let node = metric["node"]
                .as_str()
                .or_else(|| metric["instance"].as_str())
                .ok_or_else(|| anyhow!("a series without `node` or `instance`: {series}"))?;
            let peer = metric["peer_node"]
                .as_str()
                .ok_or_else(|| anyhow!("a series without `peer_node`: {series}"))?;
            let value = series["value"][1].as_str().unwrap_or_default();
            Ok(Cell {
                node: node.to_owned(),
                peer_node: peer.to_owned(),
                reachable: value != "0",
            })
        })
        .collect()
}

/// `watchdog cluster`: prints the matrix and the verdict (or JSON); exit 0 healthy, 1 a
/// verdict, 2 an error.
pub fn main(prometheus: &str, json: bool) -> ExitCode {
    let run = || -> anyhow::Result<View> {
        let runtime = super::runtime()?;
        let answer = runtime.block_on(query(prometheus, QUERY))?;
        let cells = cells(&answer)?;
        if cells.is_empty() {
            bail!(
                "{prometheus} has no watchdog_peer_node_reachable series: is it scraping the \
                 watchdog DaemonSet (its ServiceMonitor), and do the daemons know the Nodes \
                 (`[desired]`) with `cluster.enabled` and `prober.enabled`?"
            );
        }
        Ok(View::judge(cells))
    };
    match run() {
        Ok(view) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).expect("the view serializes")
                );
            } else {
                print!("{}", view.render());
            }
            if view.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => super::fail(&err, 2),
    }
}

/// GET `/api/v1/query?query=<expr>` from the Prometheus at `base` (`http://host:port`,
/// optionally with a path prefix; `https://` with the public roots).
async fn query(base: &str, expr: &str) -> anyhow::Result<serde_json::Value> {
    let uri: Uri = base.parse().with_context(|| {
        format!("--prometheus {base:?} is not a URL; give e.g. http://prometheus:9090")
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("--prometheus {base:?}: use an http:// or https:// URL"),
    };
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("--prometheus {base:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let prefix = uri.path().trim_end_matches('/');
    let path = format!("{prefix}/api/v1/query?query={}", encode(expr));
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host} is not a TLS server name"))?;
            let config = crate::sinks::alerts::transport::default_client_config();
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .context("TLS")?;
            get(stream, &path, &authority).await
        } else {
            get(stream, &path, &authority).await
        }
    };
    let body = tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("{base} did not answer within {TIMEOUT:?}"))??;
    serde_json::from_slice(&body).with_context(|| format!("{base} answered something not JSON"))
}

async fn get<S>(stream: S, path: &str, authority: &str) -> anyhow::Result<Bytes>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("watchdog/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .context("request")?;
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("answer")?
        .to_bytes();
    connection.abort();
    // Prometheus answers 400/422 with a JSON error body: show its message.
    if !status.is_success() && !status.is_client_error() {
        bail!("HTTP {status}");
    }
    Ok(body)
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(node: &str, peer: &str, reachable: bool) -> Cell {
        Cell {
            node: node.into(),
            peer_node: peer.into(),
            reachable,
        }
    }

    #[test]
    fn a_stale_node_is_unreachable_from_2_of_2_and_isolated() {
        let view = View::judge(vec![
            cell("qx-a", "qx-b", false),
            cell("qx-a", "qx-c", true),
            cell("qx-b", "qx-a", false),
            cell("qx-b", "qx-c", false),
            cell("qx-c", "qx-a", true),
            cell("qx-c", "qx-b", false),
        ]);
        assert_eq!(
            view.unreachable,
            vec![Unreachable {
                peer_node: "qx-b".into(),
                from: vec!["qx-a".into(), "qx-c".into()],
                reporting: 2,
            }]
        );
        assert_eq!(view.isolated, vec!["qx-b".to_owned()]);
        let text = view.render();
        assert!(
            text.contains(
                "qx-b is unreachable from 2 of 2 nodes: check its Node annotation / its VTEP"
            ),
            "{text}"
        );
        assert!(text.contains("qx-b is isolated"), "{text}");
    }

    #[test]
    fn one_node_alone_is_no_verdict() {
        let view = View::judge(vec![
            cell("qx-a", "qx-b", false),
            cell("qx-a", "qx-c", true),
            cell("qx-c", "qx-b", true),
        ]);
        assert!(view.healthy(), "{view:?}");
        assert!(view.render().contains("healthy"));
    }

    #[test]
    fn reads_the_query_answer() {
        let answer = serde_json::json!({"status": "success", "data": {"resultType": "vector",
        "result": [
            {"metric": {"node": "qx-a", "peer_node": "qx-b"}, "value": [1.0, "0"]},
            {"metric": {"instance": "10.0.0.3:9477", "peer_node": "qx-a"}, "value": [1.0, "1"]}
        ]}});
        assert_eq!(
            cells(&answer).unwrap(),
            vec![
                cell("qx-a", "qx-b", false),
                cell("10.0.0.3:9477", "qx-a", true)
            ]
        );
        let error = serde_json::json!({"status": "error", "errorType": "bad_data",
            "error": "parse error"});
        let err = cells(&error).unwrap_err().to_string();
        assert!(err.contains("bad_data: parse error"), "{err}");
    }
}
