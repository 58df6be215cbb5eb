//! The Docker Engine API on dockerd's unix socket, through bollard: the
//! few reads mvnet needs (version, macvlan networks, running containers,
//! events), with errors that say what is wrong with the socket and how to
//! fix it.
use std::{
    collections::HashMap, io::ErrorKind, os::unix::fs::FileTypeExt as _, path::PathBuf,
    time::Duration,
};

use bollard::{
    models::{ContainerInspectResponse, EventMessage, Network},
    query_parameters::{
        EventsOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    },
    Docker,
};
use futures::Stream;

/// Where dockerd listens when neither `--docker-host` nor `DOCKER_HOST`
/// says otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long a request may take before its answer starts (a socket that
/// accepts but never answers is not a Docker engine).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The oldest Engine API mvnet reads (Docker 20.10 speaks 1.41).
const MIN_API: (usize, usize) = (1, 40);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "invalid Docker host {given:?} ({origin}): {why}; give unix:///PATH/TO/docker.sock \
         or an absolute socket path, e.g. --docker-host unix:///var/run/docker.sock"
    )]
    BadHost {
        given: String,
        origin: &'static str,
        why: &'static str,
    },
    #[error(
        "no Docker socket at {path} ({origin}): is dockerd running? Start it, or point \
         --docker-host (or DOCKER_HOST) at its socket"
    )]
    Absent { path: PathBuf, origin: &'static str },
    #[error(
        "{path} ({origin}) is not a unix socket; point --docker-host (or DOCKER_HOST) at \
         dockerd's socket (`-H unix://…` of dockerd)"
    )]
    NotASocket { path: PathBuf, origin: &'static str },
    #[error(
        "Docker socket {path} ({origin}) refuses connections: nothing listens there (dockerd \
         stopped or crashed?); start dockerd, or point --docker-host at the socket it listens on"
    )]
    Refused { path: PathBuf, origin: &'static str },
    #[error("no permission to connect to {path} ({origin}); run mvnet as root")]
    Denied { path: PathBuf, origin: &'static str },
    #[error(
        "{path} ({origin}) does not speak the Docker Engine API: GET /version answered {what}; \
         point --docker-host (or DOCKER_HOST) at dockerd's socket"
    )]
    NotDocker {
        path: PathBuf,
        origin: &'static str,
        what: String,
    },
    #[error(
        "the Docker engine at {path} speaks Engine API {version}, older than {}.{}, the oldest \
         mvnet reads; upgrade Docker (20.10 or later)",
        MIN_API.0,
        MIN_API.1
    )]
    TooOld { path: PathBuf, version: String },
    #[error("connecting to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Docker engine at {path}: {what}: {source}")]
    Api {
        path: PathBuf,
        what: String,
        source: bollard::errors::Error,
    },
}

/// Which Docker engine to talk to: a unix socket, and where that choice
/// came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerHost {
    pub socket: PathBuf,
    pub origin: &'static str,
}

impl DockerHost {
    /// `--docker-host` if given, else `DOCKER_HOST`, else [`DEFAULT_HOST`].
    pub fn resolve(arg: Option<&str>) -> Result<DockerHost, DockerError> {
        match (
            arg,
            std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()),
        ) {
            (Some(a), _) => DockerHost::parse(a, "from --docker-host"),
            (None, Some(env)) => DockerHost::parse(&env, "from DOCKER_HOST"),
            (None, None) => DockerHost::parse(DEFAULT_HOST, "the default"),
        }
    }

    /// `unix:///path` or `/path`; other schemes (tcp, ssh, npipe) are
    /// refused: mvnet must run on the engine's host anyway, beside its
    /// containers' namespaces.
    pub fn parse(given: &str, origin: &'static str) -> Result<DockerHost, DockerError> {
        let bad = |why| DockerError::BadHost {
            given: given.to_owned(),
            origin,
            why,
        };
        let path =
            match given.split_once("://") {
                Some(("unix", rest)) => rest,
                Some(_) => return Err(bad(
                    "only unix sockets are supported (mvnet reads the containers' namespaces, so \
                     it runs on the engine's host)",
                )),
                None => given,
            };
        if path.is_empty() || !path.starts_with('/') {
            return Err(bad("the socket path must be absolute"));
        }
        Ok(DockerHost {
            socket: PathBuf::from(path),
            origin,
        })
    }
}

impl std::fmt::Display for DockerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix://{}", self.socket.display())
    }
}

/// A connection to a Docker engine that answered as one.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    host: DockerHost,
    /// The engine's version (`20.10.24+dfsg1`) and the API spoken.
    pub version: String,
    pub api_version: String,
}

impl Engine {
    /// Connects and checks that the socket is a Docker engine (GET
    /// /version), agreeing on the older of its API version and bollard's.
    pub async fn connect(host: &DockerHost) -> Result<Engine, DockerError> {
        let path = host.socket.clone();
        let origin = host.origin;
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(DockerError::Absent { path, origin })
            }
            Err(source) => return Err(DockerError::Io { path, source }),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(DockerError::NotASocket { path, origin })
            }
            Ok(_) => {}
        }
        // bollard connects lazily and wraps the socket error deep inside
        // hyper's; connecting once here gives the reason in plain words.
        if let Err(e) = tokio::net::UnixStream::connect(&path).await {
            return Err(match e.kind() {
                ErrorKind::ConnectionRefused => DockerError::Refused { path, origin },
                ErrorKind::PermissionDenied => DockerError::Denied { path, origin },
                ErrorKind::NotFound => DockerError::Absent { path, origin },
                _ => DockerError::Io { path, source: e },
            });
        }
        let docker = Docker::connect_with_unix(
            &path.to_string_lossy(),
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|source| DockerError::Api {
            path: path.clone(),
            what: "connecting".into(),
            source,
        })?;
        let not_docker = |what: String| DockerError::NotDocker {
            path: path.clone(),
            origin,
            what,
        };
        let version = match docker.version().await {
            Ok(v) => v,
            Err(e) => return Err(not_docker(describe_answer(&e))),
        };
        let (Some(engine_version), Some(api)) = (version.version, version.api_version) else {
            return Err(not_docker(
                "a document without Version and ApiVersion".into(),
            ));
        };
        let Some(parsed) = parse_api(&api) else {
            return Err(not_docker(format!("ApiVersion {api:?}")));
        };
        if parsed < MIN_API {
            return Err(DockerError::TooOld { path, version: api });
        }
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| not_docker(describe_answer(&e)))?;
        Ok(Engine {
            docker,
            host: host.clone(),
            version: engine_version,
            api_version: api,
        })
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    fn api(&self, what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let path = self.host.socket.clone();
        let what = what.into();
        move |source| DockerError::Api { path, what, source }
    }

    /// Every network with the macvlan driver.
    pub async fn macvlan_networks(&self) -> Result<Vec<Network>, DockerError> {
        let filters = HashMap::from([("driver", vec!["macvlan"])]);
        let opts = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let nets = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(self.api("listing networks"))?;
        // The filter matches driver names by substring on some engines.
        Ok(nets
            .into_iter()
            .filter(|n| n.driver.as_deref() == Some("macvlan"))
            .collect())
    }

    /// One network by id, or None when Docker has none by that id.
    pub async fn network(&self, id: &str) -> Result<Option<Network>, DockerError> {
        match self.docker.inspect_network(id, None).await {
            Ok(n) => Ok(Some(Network {
                name: n.name,
                id: n.id,
                driver: n.driver,
                options: n.options,
                ..Default::default()
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api(format!("inspecting network {id}"))(e)),
        }
    }

    /// The ids of the running containers.
    pub async fn running_containers(&self) -> Result<Vec<String>, DockerError> {
        let opts = ListContainersOptionsBuilder::default().all(false).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(self.api("listing containers"))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// One container, or None when it is gone.
    pub async fn container(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api(format!("inspecting container {id}"))(e)),
        }
    }

    /// The engine's events since `since` (the engine replays those it
    /// logged since then, then streams new ones): networks and containers
    /// only.
    pub fn events(
        &self,
        since: std::time::SystemTime,
    ) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> {
        let filters = HashMap::from([("type", vec!["network", "container"])]);
        let t = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", t.as_secs(), t.subsec_nanos());
        let opts = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        self.docker.events(Some(opts))
    }
}

/// `"1.41"` → (1, 41).
fn parse_api(v: &str) -> Option<(usize, usize)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What a socket that is not Docker's answered, in a few words.
fn describe_answer(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => {
            let mut m = message.trim().to_owned();
            if m.len() > 80 {
                m.truncate(m.floor_char_boundary(80));
                m.push('…');
            }
            format!("HTTP {status_code} {m:?}")
        }
        E::JsonDataError { .. } | E::JsonSerdeError { .. } => "something that is not JSON".into(),
        E::RequestTimeoutError => format!("nothing within {} s", REQUEST_TIMEOUT.as_secs()),
        other => format!("no HTTP ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let h = DockerHost::parse("unix:///run/d.sock", "from --docker-host").unwrap();
        assert_eq!(h.socket, PathBuf::from("/run/d.sock"));
        assert_eq!(h.to_string(), "unix:///run/d.sock");
        assert_eq!(
            DockerHost::parse("/run/d.sock", "x").unwrap().socket,
            PathBuf::from("/run/d.sock")
        );
        let e = DockerHost::parse("tcp://10.0.0.1:2375", "from DOCKER_HOST")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid Docker host \"tcp://10.0.0.1:2375\" (from DOCKER_HOST): only unix sockets \
             are supported (mvnet reads the containers' namespaces, so it runs on the engine's \
             host); give unix:///PATH/TO/docker.sock or an absolute socket path, e.g. \
             --docker-host unix:///var/run/docker.sock"
        );
        let e = DockerHost::parse("unix://run/d.sock", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the socket path must be absolute"), "{e}");
        assert!(DockerHost::parse("", "x").is_err());
    }

    #[test]
    fn api_versions() {
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert_eq!(parse_api("1"), None);
        assert_eq!(parse_api("x.y"), None);
        assert!(parse_api("1.39").unwrap() < MIN_API);
    }
}
