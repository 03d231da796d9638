//! The OpenAPI 3.1 description served at `/api/v1/openapi.json`. Bodies'
//! schemas are generated from the same types the server uses.

use axum::Json;
use outpost_api::schema::manifest_schema;
use outpost_api::wire::{
    ApplicationVersion, ApplyRequest, ApplyResponse, ErrorBody, ObjectList, StoredObject,
};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

pub async fn document() -> Json<Value> {
    Json(openapi())
}

/// Moves a generated schema's `$defs` into `components/schemas`, where
/// OpenAPI resolves references.
fn add_schema<T: JsonSchema>(generator: &mut SchemaGenerator, schemas: &mut serde_json::Map<String, Value>) {
    let schema = generator.root_schema_for::<T>().to_value();
    add_value(T::schema_name().as_ref(), schema, schemas);
}

fn add_value(name: &str, schema: Value, schemas: &mut serde_json::Map<String, Value>) {
    let text = serde_json::to_string(&schema)
        .unwrap_or_default()
        .replace("#/$defs/", "#/components/schemas/");
    let mut schema: Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(Value::Object(defs)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        schemas.extend(defs);
    }
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schemas.insert(name.to_string(), schema);
}

fn error_responses() -> Value {
    let error = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } });
    let mut responses = serde_json::Map::new();
    for (status, description) in [
        ("400", "the request is malformed"),
        ("401", "missing or invalid API token"),
        ("404", "no such object or kind"),
        ("409", "the change conflicts with other objects"),
        (
            "422",
            "the manifests are invalid; every problem is listed with its position",
        ),
    ] {
        let mut response = error.clone();
        response["description"] = json!(description);
        responses.insert(status.to_string(), response);
    }
    Value::Object(responses)
}

fn ok(schema: &str, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn with_errors(mut responses: Value) -> Value {
    if let (Some(target), Value::Object(errors)) = (responses.as_object_mut(), error_responses()) {
        target.extend(errors);
    }
    responses
}

pub fn openapi() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
    let mut schemas = serde_json::Map::new();
    add_schema::<ApplyRequest>(&mut generator, &mut schemas);
    add_schema::<ApplyResponse>(&mut generator, &mut schemas);
    add_schema::<StoredObject>(&mut generator, &mut schemas);
    add_schema::<ObjectList>(&mut generator, &mut schemas);
    add_schema::<ApplicationVersion>(&mut generator, &mut schemas);
    add_schema::<ErrorBody>(&mut generator, &mut schemas);
    add_schema::<outpost_api::telemetry::EventList>(&mut generator, &mut schemas);
    add_schema::<outpost_api::telemetry::LogList>(&mut generator, &mut schemas);
    add_value("Manifest", manifest_schema().clone(), &mut schemas);

    let kind = json!({ "name": "kind", "in": "path", "required": true,
        "schema": { "type": "string", "enum": ["sites", "applications", "deployments"] } });
    let name = json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let filters = json!([
        { "name": "site", "in": "query", "schema": { "type": "string" } },
        { "name": "application", "in": "query", "schema": { "type": "string" } },
        { "name": "service", "in": "query", "schema": { "type": "string" } },
        { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "only what happened at or after this time" },
        { "name": "after", "in": "query", "schema": { "type": "integer" }, "description": "only ids above this one, oldest first (to follow)" },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 10000 }, "description": "at most this many (default 1000); without `after`, the newest" }
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Outpost control plane API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apply, read and delete Sites, Applications and Deployments. Every endpoint but this document and /healthz needs `Authorization: Bearer TOKEN`."
        },
        "servers": [ { "url": "/api/v1" } ],
        "security": [ { "bearer": [] } ],
        "paths": {
            "/apply": { "post": {
                "summary": "Create or update every manifest of a batch, all or nothing",
                "parameters": [
                    { "name": "dryRun", "in": "query", "schema": { "type": "boolean" }, "description": "validate and report, store nothing" },
                    { "name": "source", "in": "query", "schema": { "type": "string" }, "description": "file name for diagnostics of a raw YAML body" }
                ],
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/ApplyRequest" } },
                    "application/yaml": { "schema": { "type": "string", "description": "one or more manifests (see the Manifest schema)" } }
                } },
                "responses": with_errors(json!({ "200": ok("ApplyResponse", "what was created, configured or left unchanged") }))
            } },
            "/{kind}": { "get": {
                "summary": "List objects of a kind",
                "parameters": [ kind, { "name": "selector", "in": "query", "schema": { "type": "string" }, "description": "label selector, such as 'customer = acme and env = prod'" } ],
                "responses": with_errors(json!({ "200": ok("ObjectList", "the matching objects, by name") }))
            } },
            "/{kind}/{name}": {
                "get": { "summary": "Read one object", "parameters": [ kind, name ],
                         "responses": with_errors(json!({ "200": ok("StoredObject", "the object") })) },
                "delete": { "summary": "Delete one object", "parameters": [ kind, name ],
                            "responses": with_errors(json!({ "200": ok("StoredObject", "the object as it was") })) }
            },
            "/events": { "get": {
                "summary": "Events that agents reported (started, exited, unhealthy…) and placement failures, oldest first",
                "parameters": filters.clone(),
                "responses": with_errors(json!({ "200": ok("EventList", "the matching events") }))
            } },
            "/logs": { "get": {
                "summary": "Log lines that agents uploaded; `application` is required. With `live=true` and `site`, asks the site's connected hosts now",
                "parameters": filters,
                "responses": with_errors(json!({ "200": ok("LogList", "the matching lines") }))
            } },
            "/applications/{name}/history": { "get": {
                "summary": "The kept versions of an application, newest first",
                "parameters": [ name ],
                "responses": with_errors(json!({ "200": { "description": "versions", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/ApplicationVersion" } } } } } }))
            } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        }
    })
}
