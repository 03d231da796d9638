//! The OpenAPI 3.1 description served at `/api/v1/openapi.json`: one
//! entry per route the router serves (`super::served_routes`, held to this
//! list by a test), with request and response schemas generated from the
//! same types the handlers use, and the error codes each can answer.

use axum::Json;
use outpost_api::schema::manifest_schema;
use outpost_api::wire::{
    ApplicationVersion, ApplyRequest, ApplyResponse, ErrorBody, FleetOverview, HostList, JoinToken,
    JoinTokenRequest, LabelChange, ObjectList, PlanResponse, RolloutStatus, SitePage, StoredObject,
    UndoRequest,
};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

pub async fn document() -> Json<Value> {
    Json(openapi())
}

/// What a request or a successful response carries.
#[derive(Clone, Copy)]
enum Body {
    /// A schema in `components/schemas`.
    Schema(&'static str),
    /// An array of a schema.
    ListOf(&'static str),
    /// Plain text (the Prometheus format, `ok`).
    Text,
    /// Any JSON object.
    Object,
}

/// One documented operation.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    parameters: &'static [&'static str],
    request: Option<Body>,
    response: Body,
    /// Error statuses besides 401 and 403 (which every protected route can answer).
    errors: &'static [u16],
    public: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    parameters: &'static [&'static str],
    request: Option<Body>,
    response: Body,
    errors: &'static [u16],
) -> Operation {
    Operation {
        method,
        path,
        summary,
        parameters,
        request,
        response,
        errors,
        public: false,
    }
}

use Body::{ListOf, Object, Schema, Text};

const FILTERS: &[&str] = &["site", "application", "service", "since", "after", "limit"];

/// Every operation, in the order of the router.
const OPERATIONS: &[Operation] = &[
    op(
        "POST",
        "/apply",
        "Create or update every manifest of a batch, all or nothing (JSON apply request, or a raw application/yaml stream)",
        &["dryRun", "source", "Idempotency-Key"],
        Some(Schema("ApplyRequest")),
        Schema("ApplyResponse"),
        &[400, 409, 413, 415, 422],
    ),
    op(
        "POST",
        "/plan",
        "What applying a batch would make each site run, per deployment and wave; stores nothing",
        &[],
        Some(Schema("ApplyRequest")),
        Schema("PlanResponse"),
        &[400, 409, 413, 422],
    ),
    op(
        "GET",
        "/applications/{name}/history",
        "The kept versions of an application, newest first",
        &["name"],
        None,
        ListOf("ApplicationVersion"),
        &[404],
    ),
    op(
        "POST",
        "/sites/{name}/tokens",
        "A single-use join token that enrolls one host into the site",
        &["name"],
        Some(Schema("JoinTokenRequest")),
        Schema("JoinToken"),
        &[400, 404],
    ),
    op(
        "POST",
        "/sites/{name}/rotate-keys",
        "Rotate the site's underlay keys (the site network): hosts get keys of a new epoch; the old one is accepted until every host has one (`atOnce`: no longer at all)",
        &["name"],
        Some(Schema("RotateKeysRequest")),
        Schema("SiteKeys"),
        &[400, 404],
    ),
    op(
        "GET",
        "/sites/{name}/keys",
        "The site's underlay key epoch, the one still accepted while a rotation is under way, and how many hosts hold the new one",
        &["name"],
        None,
        Schema("SiteKeys"),
        &[404],
    ),
    op(
        "GET",
        "/hosts",
        "Enrolled hosts: facts, labels, online, revision, instances",
        &["site"],
        None,
        Schema("HostList"),
        &[404],
    ),
    op(
        "GET",
        "/fleet/overview",
        "Every site the caller sees counted by state (failed, offlineUnexpected, progressing, neverConnected, offlineExpected, upToDate) and grouped by one label (`groupBy`, default region), each group's most severe sites first (at most `perGroup`)",
        &["groupBy", "perGroup", "selector"],
        None,
        Schema("FleetOverview"),
        &[400],
    ),
    op(
        "GET",
        "/fleet/sites",
        "One page of the sites a selector picks (and, with `health`, in that state), most severe first",
        &["selector", "health", "offset", "perPage"],
        None,
        Schema("SitePage"),
        &[400],
    ),
    op(
        "POST",
        "/secrets",
        "Store the next version of a secret (values base64; `sites` and `images` default to the previous version's); sites that use it get it, sealed to each host",
        &[],
        Some(Schema("SecretSetRequest")),
        Schema("SecretSummary"),
        &[400, 404, 413],
    ),
    op(
        "GET",
        "/secrets",
        "Every secret's newest version: keys, where it may go, and how many sites refer to each version; never a value",
        &[],
        None,
        Schema("SecretList"),
        &[],
    ),
    op(
        "GET",
        "/secrets/{name}",
        "One secret: the deployments that use it, and each host whose site refers to a version of it (delivered or not)",
        &["name"],
        None,
        Schema("SecretDetail"),
        &[404],
    ),
    op(
        "DELETE",
        "/secrets/{name}",
        "Delete every version of a secret; refused (409) while a deployment's application refers to it",
        &["name"],
        None,
        Schema("SecretSummary"),
        &[404, 409],
    ),
    op(
        "POST",
        "/secrets/{name}/reveal",
        "One value of the newest version (base64), written to the audit trail with who, from where and when before it is sent",
        &["name"],
        Some(Schema("RevealRequest")),
        Schema("RevealResponse"),
        &[400, 404],
    ),
    op(
        "POST",
        "/tokens",
        "An API token for a user or robot, with one role in one tenant (and optionally a site selector); shown once, stored as a hash. No token may make one of a role its own does not cover",
        &[],
        Some(Schema("TokenRequest")),
        Schema("TokenCreated"),
        &[400, 403, 409],
    ),
    op(
        "GET",
        "/tokens",
        "The API tokens of the caller's tenant (every tenant's for the provider), never the tokens themselves",
        &[],
        None,
        ListOf("TokenInfo"),
        &[403],
    ),
    op(
        "DELETE",
        "/tokens/{name}",
        "Revoke an API token: it fails from its next request",
        &["name"],
        None,
        Schema("TokenInfo"),
        &[403, 404],
    ),
    op(
        "GET",
        "/audit",
        "The audit trail, oldest first: every change, every reveal of a secret and every refusal, with who, tenant, what, which objects, from where, when and the result",
        &["since", "user", "tenant", "limit"],
        None,
        ListOf("AuditEntry"),
        &[400, 403],
    ),
    op(
        "GET",
        "/audit/verify",
        "Check the audit trail's hash chain: the first entry that does not follow from the one before it, if any",
        &[],
        None,
        Schema("AuditVerification"),
        &[403],
    ),
    op(
        "GET",
        "/ca",
        "The control plane's CA: its fingerprint and name, whether a rotation is under way, and the hosts and sites still to move to the new CA",
        &[],
        None,
        Schema("CaStatus"),
        &[],
    ),
    op(
        "POST",
        "/ca/rotate",
        "Introduce a new CA, cross-signed by the current one, which stays trusted: hosts learn both over their sessions and renew their certificates under the new one at once, sites take new underlay keys, no session ends",
        &[],
        None,
        Schema("CaStatus"),
        &[403, 409],
    ),
    op(
        "POST",
        "/ca/retire",
        "Stop trusting the previous CA, once every host holds a certificate of the new one and every site has its new underlay keys (force: even so)",
        &[],
        Some(Schema("CaRetireRequest")),
        Schema("CaStatus"),
        &[400, 403, 409],
    ),
    op(
        "POST",
        "/block",
        "Cut a host (SITE/HOST), a site or a tenant off at once: a host's or site's sessions end within a second, its connections and enrollments are refused; with wipe, connected hosts delete their secrets and stop their workloads. A blocked host's site rotates its underlay keys at once. A blocked tenant's tokens are refused and the streams they follow end",
        &[],
        Some(Schema("BlockRequest")),
        Schema("Block"),
        &[400, 403, 404, 409],
    ),
    op(
        "POST",
        "/unblock",
        "Lift a block: the host or site may connect again (a wipe stays done), the tenant's tokens work again",
        &[],
        Some(Schema("BlockRequest")),
        Schema("Block"),
        &[400, 403, 404],
    ),
    op(
        "GET",
        "/blocks",
        "The blocks in force",
        &[],
        None,
        ListOf("Block"),
        &[],
    ),
    op(
        "POST",
        "/deployments/{name}/bundle",
        "An offline bundle of a deployment's release: the images it needs and the sites it covers; given the image archive's SHA-256 and size, also the header with every covered site's desired state, signed with the CA key",
        &["name"],
        Some(Schema("BundleRequest")),
        Schema("BundleResponse"),
        &[400, 404, 409],
    ),
    op(
        "GET",
        "/events",
        "Events agents reported (started, exited, unhealthy…) and placement failures, oldest first",
        FILTERS,
        None,
        Schema("EventList"),
        &[400],
    ),
    op(
        "GET",
        "/logs",
        "Log lines agents uploaded (`application` is required); with `live=true` and `site`, asks the site's connected hosts now",
        &[
            "site",
            "application",
            "service",
            "since",
            "after",
            "limit",
            "live",
            "tail",
        ],
        None,
        Schema("LogList"),
        &[400, 404, 409],
    ),
    op(
        "GET",
        "/streams/{application}/{topic}",
        "Records sites sent up on a topic, oldest first, each stored once; with `follow=true`, server-sent events (`id`: the record's id, `data`: the record as JSON) that go on as records arrive",
        &[
            "{application}",
            "topic",
            "site",
            "since",
            "after",
            "limit",
            "follow",
        ],
        None,
        Schema("StoredRecords"),
        &[400, 404],
    ),
    op(
        "POST",
        "/streams/{application}/{topic}",
        "Publish to a down topic: the body is one record, or one per line with Content-Type application/x-ndjson (UTF-8, at most 1 MiB each); every selected site that runs the application receives them once, in order, now or when it comes back",
        &["{application}", "topic", "sites"],
        Some(Text),
        Schema("Published"),
        &[400, 404, 409, 413],
    ),
    op(
        "PATCH",
        "/hosts/{site}/{host}/labels",
        "Set and remove the operator's labels on a host (facts are read-only)",
        &["{site}", "host"],
        Some(Schema("LabelChange")),
        Schema("HostRecord"),
        &[400, 404, 409],
    ),
    op(
        "PATCH",
        "/{kind}/{name}/labels",
        "Set and remove the operator's labels on an object (a new generation)",
        &["kind", "name"],
        Some(Schema("LabelChange")),
        Schema("StoredObject"),
        &[400, 404, 409],
    ),
    op(
        "GET",
        "/deployments/{name}/rollout",
        "A deployment's rollout: waves, every site's state, history",
        &["name"],
        None,
        Schema("RolloutStatus"),
        &[404],
    ),
    op(
        "POST",
        "/deployments/{name}/rollout/undo",
        "Roll out an earlier version (the previous one, or `toVersion`)",
        &["name"],
        Some(Schema("UndoRequest")),
        Schema("ApplyResponse"),
        &[400, 404, 409, 422],
    ),
    op(
        "POST",
        "/deployments/{name}/rollout/{command}",
        "Steer a rollout: promote, pause, resume or abort",
        &["name", "command"],
        None,
        Schema("RolloutState"),
        &[400, 404, 409],
    ),
    op(
        "GET",
        "/{kind}",
        "List objects of a kind, with live status for sites and deployments",
        &["kind", "selector"],
        None,
        Schema("ObjectList"),
        &[400, 404],
    ),
    op(
        "GET",
        "/{kind}/{name}",
        "Read one object",
        &["kind", "name"],
        None,
        Schema("StoredObject"),
        &[404],
    ),
    op(
        "DELETE",
        "/{kind}/{name}",
        "Delete one object; a site with hosts needs `cascade=true`, which removes them and revokes their certificates",
        &["kind", "name", "cascade"],
        None,
        Schema("StoredObject"),
        &[400, 404, 409],
    ),
    Operation {
        public: true,
        ..op("GET", "/openapi.json", "This document", &[], None, Object, &[])
    },
    Operation {
        public: true,
        ..op(
            "GET",
            "/login",
            "Where to sign in: the OpenID Connect provider's issuer and the client id (404 if sign-in is not configured)",
            &[],
            None,
            Schema("LoginConfig"),
            &[404],
        )
    },
    Operation {
        public: true,
        ..op(
            "POST",
            "/login",
            "Sign in: an ID token from the provider (checked against its keys, issuer, audience and expiry) is traded for an API token of the role its claims map to, valid 12 hours; audited",
            &[],
            Some(Schema("LoginRequest")),
            Schema("TokenCreated"),
            &[400, 401, 403, 404, 503],
        )
    },
    op(
        "POST",
        "/login/links",
        "A one-time sign-in link for the caller itself (same user, role, tenant and sites), good for 15 minutes: its token signs in once at POST /login/link (the console's /ui/signin?link=TOKEN) and is refused as a bearer token",
        &[],
        None,
        Schema("TokenCreated"),
        &[],
    ),
    Operation {
        public: true,
        ..op(
            "POST",
            "/login/link",
            "Sign in with a one-time link's token ({\"token\": ...}): it is used up, and traded for an API token of the same grant, valid 12 hours; audited",
            &[],
            Some(Object),
            Schema("TokenCreated"),
            &[400, 401],
        )
    },
    op(
        "DELETE",
        "/login",
        "Sign out: the caller's token is revoked if a one-time sign-in link made it (a console session); any other token stays valid. Answers the token as it now is",
        &[],
        None,
        Schema("TokenInfo"),
        &[],
    ),
    op(
        "GET",
        "../metrics",
        "The fleet in the Prometheus text format (same bearer token)",
        &[],
        None,
        Text,
        &[],
    ),
    Operation {
        public: true,
        ..op("GET", "../healthz", "Liveness: `ok`", &[], None, Text, &[])
    },
];

fn parameter(name: &str) -> Value {
    let path = |description: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": description });
    let query = |schema: Value, description: &str| json!({ "name": name, "in": "query", "schema": schema, "description": description });
    match name {
        "kind" => {
            json!({ "name": "kind", "in": "path", "required": true, "schema": { "type": "string", "enum": ["sites", "applications", "deployments"] } })
        }
        "name" => path("the object's name"),
        "{site}" => {
            json!({ "name": "site", "in": "path", "required": true, "schema": { "type": "string" }, "description": "the site's name" })
        }
        "host" => path("the host's name"),
        "{application}" => {
            json!({ "name": "application", "in": "path", "required": true, "schema": { "type": "string" }, "description": "the application's name" })
        }
        "topic" => path("a topic the application declares"),
        "follow" => query(
            json!({ "type": "boolean" }),
            "answer with server-sent events, and go on as records arrive",
        ),
        "sites" => query(
            json!({ "type": "string" }),
            "which sites receive the records, by their labels (default: every site that runs the application)",
        ),
        "command" => {
            json!({ "name": "command", "in": "path", "required": true, "schema": { "type": "string", "enum": ["promote", "pause", "resume", "abort"] } })
        }
        "Idempotency-Key" => {
            json!({ "name": name, "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 128 }, "description": "a repeated key gets the outcome stored the first time (kept a day)" })
        }
        "dryRun" => query(json!({ "type": "boolean" }), "validate and report, store nothing"),
        "source" => query(
            json!({ "type": "string" }),
            "file name for diagnostics of a raw YAML body",
        ),
        "selector" => query(
            json!({ "type": "string" }),
            "label selector, such as 'customer = acme and env = prod'",
        ),
        "cascade" => query(
            json!({ "type": "boolean" }),
            "for a site with hosts: remove them and revoke their certificates",
        ),
        "site" => query(json!({ "type": "string" }), "only this site"),
        "application" => query(json!({ "type": "string" }), "only this application"),
        "service" => query(json!({ "type": "string" }), "only this service"),
        "since" => query(
            json!({ "type": "string", "format": "date-time" }),
            "only what happened at or after this time",
        ),
        "after" => query(
            json!({ "type": "integer" }),
            "only ids above this one, oldest first (to follow)",
        ),
        "limit" => query(
            json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
            "at most this many (default 1000); without `after`, the newest",
        ),
        "live" => query(json!({ "type": "boolean" }), "ask the site's connected hosts now"),
        "user" => query(json!({ "type": "string" }), "only what this user did"),
        "tenant" => query(json!({ "type": "string" }), "only what was done in this tenant"),
        "groupBy" => query(
            json!({ "type": "string" }),
            "the label whose values group the sites (default region)",
        ),
        "perGroup" => query(
            json!({ "type": "integer", "minimum": 0, "maximum": 1000 }),
            "at most this many sites listed per group, most severe first (default 100)",
        ),
        "health" => query(
            json!({ "type": "string", "enum": ["failed", "offlineUnexpected", "progressing", "neverConnected", "offlineExpected", "upToDate"] }),
            "only sites in this state",
        ),
        "offset" => query(
            json!({ "type": "integer", "minimum": 0 }),
            "skip this many sites (default 0)",
        ),
        "perPage" => query(
            json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
            "at most this many sites (default 50)",
        ),
        "tail" => query(
            json!({ "type": "integer" }),
            "with `live`: at most this many lines per container",
        ),
        _ => query(json!({ "type": "string" }), ""),
    }
}

fn content(body: Body) -> Value {
    match body {
        Schema(name) => {
            json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } })
        }
        ListOf(name) => {
            json!({ "application/json": { "schema": { "type": "array", "items": { "$ref": format!("#/components/schemas/{name}") } } } })
        }
        Text => json!({ "text/plain": { "schema": { "type": "string" } } }),
        Object => json!({ "application/json": { "schema": { "type": "object" } } }),
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "the request is malformed (a query parameter, a header, a body that is not what it should be)",
        401 => "missing, invalid, expired or revoked API token",
        403 => "the token's role may not do this",
        503 => "a service the control plane relies on (the identity provider) did not answer",
        404 => "no such object, kind, site or host",
        409 => "the change conflicts with what is stored or running",
        413 => "the body is larger than 8 MiB",
        415 => "the content type is not accepted",
        422 => "the manifests are invalid; every problem is listed with its position",
        _ => "an error",
    }
}

fn operation(op: &Operation) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".to_string(),
        json!({ "description": "done", "content": content(op.response) }),
    );
    // Every protected route answers 401 without a valid token, and 403 to
    // a role that may not call it (the policy layer).
    let refused: &[u16] = if op.public { &[] } else { &[401, 403] };
    for status in op.errors.iter().chain(refused).copied() {
        responses.insert(
            status.to_string(),
            json!({ "description": error_description(status), "content": content(Schema("ErrorBody")) }),
        );
    }
    let mut value = json!({
        "summary": op.summary,
        "operationId": format!("{} {}", op.method, op.path),
        "parameters": op.parameters.iter().map(|p| parameter(p)).collect::<Vec<_>>(),
        "responses": responses,
    });
    if let Some(request) = op.request {
        let mut body = content(request);
        if op.path == "/apply" {
            body["application/yaml"] = json!({ "schema": { "type": "string", "description": "one or more manifests (see the Manifest schema)" } });
        }
        // A join token's, an undo's and a rotation's bodies may be left out (defaults).
        let required = !matches!(
            request,
            Schema("JoinTokenRequest" | "UndoRequest" | "RotateKeysRequest")
        );
        value["requestBody"] = json!({ "required": required, "content": body });
    }
    if op.public {
        value["security"] = json!([]);
    }
    value
}

/// Moves a generated schema's `$defs` into `components/schemas`, where
/// OpenAPI resolves references.
fn add_schema<T: JsonSchema>(generator: &mut SchemaGenerator, schemas: &mut Map<String, Value>) {
    let schema = generator.root_schema_for::<T>().to_value();
    add_value(T::schema_name().as_ref(), schema, schemas);
}

fn add_value(name: &str, schema: Value, schemas: &mut Map<String, Value>) {
    let text = schema.to_string().replace("#/$defs/", "#/components/schemas/");
    let Ok(mut schema) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    if let Some(Value::Object(defs)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        schemas.extend(defs);
    }
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schemas.insert(name.to_string(), schema);
}

pub fn openapi() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
    let mut schemas = Map::new();
    add_schema::<ApplyRequest>(&mut generator, &mut schemas);
    add_schema::<ApplyResponse>(&mut generator, &mut schemas);
    add_schema::<PlanResponse>(&mut generator, &mut schemas);
    add_schema::<StoredObject>(&mut generator, &mut schemas);
    add_schema::<ObjectList>(&mut generator, &mut schemas);
    add_schema::<ApplicationVersion>(&mut generator, &mut schemas);
    add_schema::<JoinTokenRequest>(&mut generator, &mut schemas);
    add_schema::<JoinToken>(&mut generator, &mut schemas);
    add_schema::<outpost_api::wire::RotateKeysRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::wire::SiteKeys>(&mut generator, &mut schemas);
    add_schema::<HostList>(&mut generator, &mut schemas);
    add_schema::<FleetOverview>(&mut generator, &mut schemas);
    add_schema::<SitePage>(&mut generator, &mut schemas);
    add_schema::<crate::store::HostRecord>(&mut generator, &mut schemas);
    add_schema::<LabelChange>(&mut generator, &mut schemas);
    add_schema::<RolloutStatus>(&mut generator, &mut schemas);
    add_schema::<UndoRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::wire::BundleRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::wire::BundleResponse>(&mut generator, &mut schemas);
    add_schema::<outpost_api::rollout::RolloutState>(&mut generator, &mut schemas);
    add_schema::<ErrorBody>(&mut generator, &mut schemas);
    add_schema::<outpost_api::telemetry::EventList>(&mut generator, &mut schemas);
    add_schema::<outpost_api::telemetry::LogList>(&mut generator, &mut schemas);
    add_schema::<outpost_api::stream::StoredRecords>(&mut generator, &mut schemas);
    add_schema::<outpost_api::stream::Published>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::SecretSetRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::SecretSummary>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::SecretList>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::SecretDetail>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::RevealRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::secret::RevealResponse>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::TokenRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::LoginConfig>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::LoginRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::TokenCreated>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::TokenInfo>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::AuditEntry>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::AuditVerification>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::BlockRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::CaStatus>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::CaRetireRequest>(&mut generator, &mut schemas);
    add_schema::<outpost_api::access::Block>(&mut generator, &mut schemas);
    add_value("Manifest", manifest_schema().clone(), &mut schemas);

    let mut paths = Map::new();
    for op in OPERATIONS {
        let (path, root) = match op.path.strip_prefix("..") {
            Some(path) => (path, true),
            None => (op.path, false),
        };
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if root {
            entry["servers"] = json!([{ "url": "/" }]);
        }
        entry[op.method.to_ascii_lowercase()] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Outpost control plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apply, read and delete Sites, Applications and Deployments; keep secrets; enroll hosts; read events and logs; steer rollouts. Every endpoint but this document and /healthz needs `Authorization: Bearer TOKEN`."
        },
        "servers": [ { "url": "/api/v1" } ],
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: the document described 6 of 17 routes. Now a route the
    /// router serves and the document lacks (or the reverse) fails here.
    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let mut served = super::super::served_routes();
        let mut documented: Vec<(&str, &str)> = OPERATIONS.iter().map(|op| (op.method, op.path)).collect();
        served.sort_unstable();
        documented.sort_unstable();
        assert_eq!(served, documented);
        let document = openapi();
        for (method, path) in &served {
            let path = path.trim_start_matches("..");
            assert!(
                document["paths"][path][method.to_ascii_lowercase()].is_object(),
                "{method} {path}"
            );
        }
    }

    /// Every reference points at a schema the document holds.
    #[test]
    fn every_reference_resolves() {
        let document = openapi();
        let text = document.to_string();
        assert!(!text.contains("#/$defs/"));
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap_or(0)];
            assert!(document["components"]["schemas"][name].is_object(), "{name}");
        }
    }

    /// The document passes a real OpenAPI 3.1 validator
    /// (`openapi-spec-validator`, which `scripts/test` installs).
    #[test]
    fn the_document_is_valid_openapi_3_1() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, openapi().to_string()).unwrap();
        let output = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
            .arg(&file)
            .output()
            .expect("python3 runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("No module named openapi_spec_validator"),
            "openapi-spec-validator is not installed: run scripts/test, which installs it"
        );
        assert!(
            output.status.success(),
            "{}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
