//! From text to validated manifests: YAML syntax, then the schema walk,
//! then the rules a schema cannot say (duplicate names, exclusive fields,
//! `${site.x}` references, host port clashes). Every problem is reported at
//! once, each with `file:line:column` and its field path.

use std::collections::{BTreeMap, HashMap};

use crate::diagnostic::{Diagnostic, Diagnostics, Path};
use crate::limits::{self, DurationRange};
use crate::manifest::{
    Application, Container, Deployment, Egress, EnvValue, Failover, Health, Ingress, Kind, Manifest,
    Metadata, Service, ServiceMode, Site,
};
use crate::schema;
use crate::stream::Topic;
use crate::yaml::{self, Node, Pos};

/// A validated manifest and the tree it came from, for positions of later
/// findings (such as a Deployment naming an application that does not exist).
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    pub manifest: Manifest,
    node: Node,
}

impl Document {
    pub fn pos(&self, path: &Path) -> Pos {
        path.locate(&self.node).pos
    }

    /// A diagnostic about this document at a field path.
    pub fn diagnostic(&self, path: &Path, message: impl Into<String>) -> Diagnostic {
        let pos = self.pos(path);
        Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Parses and validates every document of a YAML (or JSON) stream.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, Diagnostics> {
    let mut out = Diagnostics::default();
    let nodes = match yaml::load(text) {
        Ok(nodes) => nodes,
        Err(err) => {
            out.push(
                file,
                err.pos,
                &Path::root(),
                format!("not valid YAML: {}", err.message),
            );
            return Err(out);
        }
    };
    if nodes.is_empty() {
        out.push(
            file,
            Pos { line: 1, column: 1 },
            &Path::root(),
            "no manifests found (the file is empty)",
        );
        return Err(out);
    }
    let mut documents = Vec::new();
    for node in nodes {
        let before = out.len();
        schema::check_document(file, &node, &mut out);
        if out.len() > before {
            continue;
        }
        let json = node.to_json();
        let size = json.to_string().len();
        if size > limits::MAX_OBJECT_BYTES {
            out.push(
                file,
                node.pos,
                &Path::root(),
                format!(
                    "the object has {} KiB; one object may have at most {} KiB",
                    size >> 10,
                    limits::MAX_OBJECT_BYTES >> 10
                ),
            );
            continue;
        }
        match serde_json::from_value::<Manifest>(json) {
            Ok(manifest) => {
                let document = Document {
                    file: file.to_string(),
                    manifest,
                    node,
                };
                Checker {
                    document: &document,
                    out: &mut out,
                }
                .check();
                documents.push(document);
            }
            // The schema walk should have caught this; report it all the same.
            Err(err) => out.push(file, node.pos, &Path::root(), err.to_string()),
        }
    }
    if out.is_empty() {
        Ok(documents)
    } else {
        Err(out.sorted())
    }
}

/// Parses and validates several files applied together, as one batch:
/// every problem of every file, plus objects defined twice across them.
pub fn parse_files<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Document>, Diagnostics> {
    let mut documents = Vec::new();
    let mut problems = Diagnostics::default();
    for (name, content) in files {
        match parse_documents(name, content) {
            Ok(parsed) => documents.extend(parsed),
            Err(diagnostics) => problems.extend(diagnostics),
        }
    }
    problems.extend(check_batch(&documents));
    if problems.is_empty() {
        Ok(documents)
    } else {
        Err(problems.sorted())
    }
}

/// Checks a batch applied together: one object may be defined only once.
pub fn check_batch(documents: &[Document]) -> Diagnostics {
    let mut out = Diagnostics::default();
    let mut first: HashMap<(Kind, &str), &Document> = HashMap::new();
    let name_path = Path::root().field("metadata").field("name");
    for document in documents {
        let key = (document.manifest.kind(), document.manifest.name());
        if let Some(earlier) = first.get(&key) {
            let at = earlier.pos(&name_path);
            out.0.push(document.diagnostic(
                &name_path,
                format!(
                    "{} {:?} is defined twice (also at {}:{}:{})",
                    key.0, key.1, earlier.file, at.line, at.column
                ),
            ));
        } else {
            first.insert(key, document);
        }
    }
    out
}

struct Checker<'a> {
    document: &'a Document,
    out: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.out.0.push(self.document.diagnostic(path, message));
    }

    fn check(&mut self) {
        let root = Path::root();
        match &self.document.manifest {
            Manifest::Site(site) => {
                self.metadata(&site.metadata, &root);
                self.site(site, &root.field("spec"));
            }
            Manifest::Application(app) => {
                self.metadata(&app.metadata, &root);
                self.application(app, &root.field("spec"));
            }
            Manifest::Deployment(deployment) => {
                self.metadata(&deployment.metadata, &root);
                self.deployment(deployment, &root.field("spec"));
            }
            Manifest::Tenant(tenant) => self.metadata(&tenant.metadata, &root),
        }
        self.namespace();
    }

    /// A site or tenant has a plain name; an object and what it refers to
    /// share one namespace (see `crate::tenancy`).
    fn namespace(&mut self) {
        let mut manifest = self.document.manifest.clone();
        let kind = manifest.kind();
        let names = crate::tenancy::names_mut(&mut manifest);
        let Some(((_, own), refs)) = names.split_first() else {
            return;
        };
        if matches!(kind, Kind::Site | Kind::Tenant) && own.tenant().is_some() {
            let message = format!("{:?} is not a DNS label (a {kind} has no tenant)", own.as_str());
            self.error(&Path::root().field("metadata").field("name"), message);
            return;
        }
        for (path, name) in refs {
            if name.tenant() != own.tenant() {
                let namespace = name.tenant().map_or("the site provider's".to_string(), |tenant| {
                    format!("tenant {tenant}'s")
                });
                self.error(
                    path,
                    format!(
                        "{:?} is in another namespace ({namespace}): an object refers only to objects of its own tenant",
                        name.as_str()
                    ),
                );
            }
        }
    }

    fn duration(&mut self, path: &Path, value: Option<crate::quantity::Duration>, range: DurationRange) {
        if let Some(value) = value
            && let Err(message) = range.check(value)
        {
            self.error(path, message);
        }
    }

    fn metadata(&mut self, metadata: &Metadata, root: &Path) {
        let labels = root.field("metadata").field("labels");
        if metadata.labels.len() > limits::MAX_LABELS {
            self.error(
                &labels,
                format!(
                    "{} labels; an object takes at most {}",
                    metadata.labels.len(),
                    limits::MAX_LABELS
                ),
            );
        }
        for (key, value) in &metadata.labels {
            let path = labels.field(key);
            if let Err(message) = check_label_key(key) {
                self.error(&path, message);
            }
            if let Err(message) = check_label_value(value) {
                self.error(&path, message);
            }
        }
    }

    fn site(&mut self, site: &Site, spec: &Path) {
        self.duration(
            &spec.field("hostLossAfter"),
            site.spec.host_loss_after,
            limits::HOST_LOSS_AFTER,
        );
        let variables = spec.field("variables");
        if site.spec.variables.len() > limits::MAX_VARIABLES {
            self.error(
                &variables,
                format!(
                    "{} variables; a site takes at most {}",
                    site.spec.variables.len(),
                    limits::MAX_VARIABLES
                ),
            );
        }
        for (name, value) in &site.spec.variables {
            let path = variables.field(name);
            if !is_identifier(name) || name.len() > limits::MAX_VARIABLE_NAME {
                self.error(
                    &path,
                    format!(
                        "{name:?} is not a variable name (at most {} letters, digits and '_', not starting with a digit)",
                        limits::MAX_VARIABLE_NAME
                    ),
                );
            }
            if value.len() > limits::MAX_VALUE_BYTES {
                self.error(
                    &path,
                    format!(
                        "the value has {} bytes; at most {} fit",
                        value.len(),
                        limits::MAX_VALUE_BYTES
                    ),
                );
            }
        }
        // The time zone stream windows are read in: a name this build does
        // not know would silently mean UTC.
        let key = crate::stream::TIME_ZONE_KEY;
        let zones = [
            (variables.field(key), site.spec.variables.get(key)),
            (
                Path::root().field("metadata").field("labels").field(key),
                site.metadata.labels.get(key),
            ),
        ];
        for (path, zone) in zones {
            if let Some(zone) = zone
                && jiff::tz::TimeZone::get(zone).is_err()
            {
                self.error(
                    &path,
                    format!("unknown time zone {zone:?} (use an IANA name such as Europe/Oslo, or UTC)"),
                );
            }
        }
    }

    fn application(&mut self, app: &Application, spec: &Path) {
        let version = &app.spec.version;
        if version.is_empty() || version.len() > 128 || version.chars().any(char::is_whitespace) {
            self.error(
                &spec.field("version"),
                format!("{version:?} is not a version (1 to 128 characters, no spaces)"),
            );
        }
        let services = spec.field("services");
        if app.spec.services.is_empty() {
            self.error(&services, "an application needs at least one service");
        }
        let mut service_names: HashMap<&str, usize> = HashMap::new();
        let mut host_ports: HashMap<(u32, bool), String> = HashMap::new();
        let mut ingress_ports: HashMap<(u32, Option<&str>), String> = HashMap::new();
        for (i, service) in app.spec.services.iter().enumerate() {
            let path = services.index(i);
            if let Some(first) = service_names.insert(service.name.as_str(), i) {
                self.error(
                    &path.field("name"),
                    format!(
                        "duplicate service name {:?} (also spec.services[{first}])",
                        service.name.as_str()
                    ),
                );
            }
            if service.mode == Some(ServiceMode::PerHost) && service.replicas.is_some() {
                self.error(
                    &path.field("replicas"),
                    "replicas cannot be combined with mode: per-host",
                );
            }
            if service.mode == Some(ServiceMode::PerHost)
                && let Some(failover @ (Failover::Move | Failover::Singleton)) = service.failover
            {
                self.error(
                    &path.field("failover"),
                    format!(
                        "a per-host service runs on every matching host and cannot move (failover: {}); use stay, or leave it out",
                        failover.as_str()
                    ),
                );
            }
            self.egress(app, service, &path.field("egress"));
            if let Some(ingress) = &service.ingress {
                self.ingress(service, ingress, &path.field("ingress"), &mut ingress_ports);
            }
            let containers = path.field("containers");
            if service.containers.is_empty() {
                self.error(&containers, "a service needs at least one container");
            }
            let mut container_names: HashMap<&str, usize> = HashMap::new();
            for (j, container) in service.containers.iter().enumerate() {
                let path = containers.index(j);
                if let Some(first) = container_names.insert(container.name.as_str(), j) {
                    self.error(
                        &path.field("name"),
                        format!(
                            "duplicate container name {:?} (also containers[{first}])",
                            container.name.as_str()
                        ),
                    );
                }
                self.container(container, &path, &mut host_ports);
            }
        }
        self.streams(&app.spec.streams, &spec.field("streams"));
    }

    fn egress(&mut self, app: &Application, service: &Service, path: &Path) {
        let mut seen: HashMap<&Egress, usize> = HashMap::new();
        for (k, egress) in service.egress.iter().enumerate() {
            let path = path.index(k);
            if egress.application.as_str() == app.metadata.name.as_str() {
                self.error(
                    &path.field("application"),
                    format!(
                        "{:?} is this service's own application: its services are reached by name without egress",
                        egress.application.as_str()
                    ),
                );
            } else if let Some(first) = seen.insert(egress, k) {
                self.error(&path, format!("the same service as egress[{first}]"));
            }
        }
    }

    fn ingress<'a>(
        &mut self,
        service: &Service,
        ingress: &'a Ingress,
        path: &Path,
        ports: &mut HashMap<(u32, Option<&'a str>), String>,
    ) {
        if let Some(host) = &ingress.host
            && !crate::manifest::is_dns_name(host)
        {
            self.error(
                &path.field("host"),
                format!("{host:?} is not a host name (DNS labels joined by dots)"),
            );
        }
        let tcp: Vec<u32> = service.tcp_ports().collect();
        match ingress.target_port {
            Some(target) if !tcp.contains(&target) => self.error(
                &path.field("targetPort"),
                format!(
                    "{target} is not a TCP port of the service's containers (they declare {})",
                    listed(&tcp)
                ),
            ),
            None if tcp.is_empty() => self.error(
                path,
                "the service's containers declare no TCP port to forward to (add ports: [ { container: PORT } ])",
            ),
            _ => {}
        }
        let key = (ingress.port, ingress.host.as_deref());
        let taken = ports.iter().find(|((port, host), _)| {
            *port == key.0 && (host.is_none() || key.1.is_none() || *host == key.1)
        });
        if let Some((_, other)) = taken {
            self.error(
                &path.field("port"),
                format!(
                    "ingress port {} is already served by {other}; services share a port only with different hosts",
                    ingress.port
                ),
            );
        } else {
            ports.insert(key, path.to_string());
        }
    }

    fn streams(&mut self, topics: &[Topic], path: &Path) {
        use crate::stream::{Direction, MAX_RETENTION, MAX_TOPICS, MIN_RETENTION, Priority};
        if topics.len() > MAX_TOPICS {
            self.error(
                path,
                format!(
                    "{} topics; an application declares at most {MAX_TOPICS}",
                    topics.len()
                ),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, topic) in topics.iter().enumerate() {
            let path = path.index(i);
            if let Some(first) = names.insert(topic.name.as_str(), i) {
                self.error(
                    &path.field("name"),
                    format!(
                        "duplicate topic name {:?} (also spec.streams[{first}])",
                        topic.name.as_str()
                    ),
                );
            }
            let retention = topic.retention.0;
            if !(MIN_RETENTION..=MAX_RETENTION).contains(&retention) {
                self.error(
                    &path.field("retention"),
                    format!(
                        "{} is out of range (from {} to {})",
                        topic.retention,
                        crate::quantity::Size(MIN_RETENTION),
                        crate::quantity::Size(MAX_RETENTION)
                    ),
                );
            }
            if topic.direction != Direction::Up {
                let direction = topic.direction.as_str();
                if topic.priority.is_some() {
                    self.error(
                        &path.field("priority"),
                        format!(
                            "a {direction} topic has no priority: priorities order the uplink of up topics"
                        ),
                    );
                }
                if topic.window.is_some() {
                    self.error(
                        &path.field("window"),
                        format!("a {direction} topic has no window: windows limit the uplink of up topics"),
                    );
                }
            } else if topic.priority == Some(Priority::Urgent) && topic.window.is_some() {
                self.error(
                    &path.field("window"),
                    "an urgent topic is never held back: drop the window or lower the priority",
                );
            }
        }
    }

    fn container(
        &mut self,
        container: &Container,
        path: &Path,
        host_ports: &mut HashMap<(u32, bool), String>,
    ) {
        for (name, value) in &container.env {
            let env_path = path.field("env").field(name);
            if !is_identifier(name) {
                self.error(
                    &env_path,
                    format!("{name:?} is not an environment variable name (letters, digits and '_')"),
                );
            }
            let EnvValue::Text(value) = value else {
                continue;
            };
            if let Err(message) = check_references(value) {
                self.error(&env_path, message);
            }
            if value.len() > limits::MAX_VALUE_BYTES {
                self.error(
                    &env_path,
                    format!(
                        "the value has {} bytes; at most {} fit",
                        value.len(),
                        limits::MAX_VALUE_BYTES
                    ),
                );
            }
        }
        for (k, port) in container.ports.iter().enumerate() {
            let Some(host) = port.host else { continue };
            let port_path = path.field("ports").index(k).field("host");
            let key = (host, port.protocol == crate::manifest::Protocol::Udp);
            if let Some(other) = host_ports.get(&key) {
                self.error(&port_path, format!("host port {host} is already used by {other}"));
            } else {
                host_ports.insert(key, port_path.to_string());
            }
        }
        if let Some(health) = &container.health {
            self.health(health, &path.field("health"));
        }
        // Volumes and secrets share the container's mount points.
        let mut mount_paths: BTreeMap<&str, String> = BTreeMap::new();
        let mounts = container
            .volumes
            .iter()
            .enumerate()
            .map(|(k, volume)| ("volumes", k, volume.path.as_str()))
            .chain(
                container
                    .secrets
                    .iter()
                    .enumerate()
                    .map(|(k, mount)| ("secrets", k, mount.path.as_str())),
            );
        for (field, k, mount_path) in mounts {
            let at = format!("{field}[{k}]");
            let field_path = path.field(field).index(k).field("path");
            if !mount_path.starts_with('/') {
                self.error(&field_path, format!("{mount_path:?} is not an absolute path"));
            } else if let Some(first) = mount_paths.get(mount_path) {
                self.error(
                    &field_path,
                    format!("{mount_path:?} is already mounted by {first}"),
                );
            } else {
                mount_paths.insert(mount_path, at);
            }
        }
        for (k, device) in container.devices.iter().enumerate() {
            if !device.starts_with("/dev/") {
                self.error(
                    &path.field("devices").index(k),
                    format!("{device:?} is not a device path (such as /dev/video0)"),
                );
            }
        }
    }

    fn health(&mut self, health: &Health, path: &Path) {
        let probes = [health.http.is_some(), health.tcp.is_some(), health.exec.is_some()];
        match probes.iter().filter(|p| **p).count() {
            0 => self.error(path, "a health check needs one of http, tcp or exec"),
            1 => {}
            _ => self.error(path, "a health check takes only one of http, tcp or exec"),
        }
        if let Some(exec) = &health.exec
            && exec.command.is_empty()
        {
            self.error(&path.field("exec").field("command"), "the command is empty");
        }
        self.duration(&path.field("interval"), health.interval, limits::PROBE_INTERVAL);
        self.duration(&path.field("timeout"), health.timeout, limits::PROBE_TIMEOUT);
    }

    fn deployment(&mut self, deployment: &Deployment, spec: &Path) {
        if let Some(version) = &deployment.spec.version
            && version.trim().is_empty()
        {
            self.error(
                &spec.field("version"),
                "the version is empty (leave it out to follow the application)",
            );
        }
        let Some(rollout) = &deployment.spec.rollout else {
            return;
        };
        let rollout_path = spec.field("rollout");
        self.duration(
            &rollout_path.field("healthyFor"),
            rollout.healthy_for,
            limits::ROLLOUT_HEALTHY_FOR,
        );
        self.duration(
            &rollout_path.field("timeout"),
            rollout.timeout,
            limits::ROLLOUT_TIMEOUT,
        );
        self.duration(
            &rollout_path.field("prestageTimeout"),
            rollout.prestage_timeout,
            limits::ROLLOUT_PRESTAGE_TIMEOUT,
        );
        if let Some(waves) = &rollout.waves {
            let path = rollout_path.field("waves");
            match (waves.size, waves.exponential) {
                (Some(_), Some(_)) => self.error(&path, "waves take either size or exponential, not both"),
                (None, None) => self.error(&path, "waves need size (fixed) or exponential (growing)"),
                (Some(_), None) if waves.start.is_some() => {
                    self.error(&path.field("start"), "start goes with exponential waves")
                }
                _ => {}
            }
        }
    }
}

/// `1, 2 and 3`, or `none`.
fn listed(ports: &[u32]) -> String {
    match ports {
        [] => "none".to_string(),
        [one] => one.to_string(),
        [rest @ .., last] => format!(
            "{} and {last}",
            rest.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Label keys: an optional DNS prefix and `/`, then a name of at most 63
/// letters, digits, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix
                .split('.')
                .all(|part| crate::manifest::check_dns_label(part).is_ok());
        if !valid {
            return Err(format!(
                "label key {key:?} has an invalid prefix (a DNS name such as example.com)"
            ));
        }
    }
    if !is_label_text(name) || name.is_empty() {
        return Err(format!(
            "label key {key:?} is not valid (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} is not valid (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

fn is_label_text(text: &str) -> bool {
    text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The `${site.NAME}` references in an env value; `$$` writes a literal `$`.
pub fn site_references(value: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("unterminated \"${{\" in {value:?}"));
        };
        let reference = &body[..end];
        match reference.strip_prefix("site.") {
            Some(name) if is_identifier(name) => names.push(name),
            _ => {
                return Err(format!(
                    "\"${{{reference}}}\" is not a reference this can resolve (use ${{site.NAME}} for a site variable, $$ for a literal $)"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    Ok(names)
}

fn check_references(value: &str) -> Result<(), String> {
    site_references(value).map(drop)
}

#[cfg(test)]
mod tests;
