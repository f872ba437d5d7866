//! The OpenAPI 3 document of the API, generated from the action table.
//!
//! Every operation is an entry of [`ACTIONS`]: its method, path, `operationId` (the action's
//! id), summary and kind of answer come from there. What the table does not say (the query,
//! the request body, the answer's type) comes from one exhaustive `match` over [`Action`]
//! ([`io`]), so an action added to the table without saying what it takes and answers does
//! not compile. The schemas are derived from the API types (`#[derive(utoipa::ToSchema)]`),
//! the same types the daemon and the CLI (de)serialize, so the document cannot drift from the
//! wire.
//!
//! The committed copy is `docs/openapi.json`; `mayfly-api`'s tests fail when it is stale, and
//! `MAYFLY_WRITE_OPENAPI=1 cargo test -p mayfly-api --lib openapi` writes it again.

use std::collections::BTreeMap;

use utoipa::ToSchema;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    ArrayBuilder, ComponentsBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required};

use crate::actions::{ACTIONS, Action, Answer, Method};
use crate::{ErrorCode, NDJSON, stream};

/// Media type of Prometheus' text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Media type of OpenMetrics text (what a Prometheus client library may answer instead).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0";

/// The OpenAPI document of this API.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    let mut paths = PathsBuilder::new();
    for spec in ACTIONS {
        let io = io(spec.action, &mut schemas);
        let mut op = OperationBuilder::new()
            .operation_id(Some(spec.id))
            .summary(Some(spec.summary))
            .tag(spec.path.split('/').nth(2).unwrap_or("daemon"));
        if let Some(d) = io.description {
            op = op.description(Some(d));
        }
        if spec.action == Action::Login {
            // Login is how a web session begins: it needs no credentials.
            op = op.security(SecurityRequirement::default());
        }
        for name in path_params(spec.path) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(path_param_doc(name)))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1)),
                    )),
            );
        }
        if let Some(query) = &io.query {
            for p in query_params(query) {
                op = op.parameter(p);
            }
        }
        if matches!(spec.answer, Answer::Upgrade | Answer::WebSocket) {
            op = upgrade_headers(op, spec.answer);
        }
        if let Some(body) = io.body {
            op = op.request_body(Some(body));
        }
        op = op.response(
            success_status(spec.answer),
            success(spec.action, spec.answer, io.answer),
        );
        for status in error_statuses(spec.action, io.has_body, io.query.is_some()) {
            op = op.response(
                status.to_string(),
                Ref::new(format!("#/components/responses/{}", error_name(status))),
            );
        }
        let method = match spec.method {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
            Method::Patch => HttpMethod::Patch,
            Method::Delete => HttpMethod::Delete,
        };
        paths = paths.path(spec.path, PathItem::new(method, op));
    }
    // Every error answer refers to it.
    schemas.reference::<crate::ErrorBody>();
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas.into_sorted())
        .responses_from_iter(
            ERROR_STATUSES
                .iter()
                .map(|&status| (error_name(status), error_response(status))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token made by `mayfly token create` (over TCP; the unix socket \
                         needs none)",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "mayfly_session",
                "The web page's session (`POST /v1/login`); a request that is not GET or HEAD \
                 must carry `X-Mayfly-Request: 1` too",
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mayfly")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION)),
        )
        .paths(paths)
        .components(Some(components))
        .security(Some([
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
            // The unix socket: no credentials.
            SecurityRequirement::default(),
        ]))
        .build()
}

/// The document as the daemon serves it and `docs/openapi.json` holds it: pretty JSON with a
/// final newline.
pub fn json() -> String {
    let mut s = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

const DESCRIPTION: &str = "\
mayfly's management API: transient containers from read-only templates.

Served on the daemon's unix socket (root only, no credentials) and, with `mayfly daemon \
--listen ADDR:PORT`, over TLS with a bearer token (`Authorization: Bearer SECRET`, from \
`mayfly token create`) or the web page's session cookie.

Every error answers `{\"error\": {\"code\", \"message\", \"hint\"}}` (`ErrorBody`) with the \
status of its code. Paths take a trailing slash. Bodies are JSON (`deny_unknown_fields`: a \
misspelt field is an error), at most 1 MiB, except a template archive upload.

Streaming answers: `application/x-ndjson` (one JSON object per line, each matching the \
given schema, until the job ends; the last line is its outcome), `101 Switching Protocols` \
to `mayfly-stream` (exec, console, run: binary frames, see the operation), a WebSocket (the \
web page's terminal), raw bytes (logs), Prometheus text (metrics).";

/// What an action takes and answers beyond its entry in the table.
struct Io {
    /// The schema of its query (an object: each property is a query parameter).
    query: Option<RefOr<Schema>>,
    /// Its request body.
    body: Option<utoipa::openapi::request_body::RequestBody>,
    has_body: bool,
    /// The schema of its JSON answer, or of each line of its NDJSON answer.
    answer: Option<RefOr<Schema>>,
    /// More than the summary says.
    description: Option<&'static str>,
}

impl Io {
    fn new() -> Self {
        Io {
            query: None,
            body: None,
            has_body: false,
            answer: None,
            description: None,
        }
    }

    fn answer(mut self, schema: RefOr<Schema>) -> Self {
        self.answer = Some(schema);
        self
    }

    fn query<T: ToSchema>(mut self) -> Self {
        self.query = Some(T::schema());
        self
    }

    /// A JSON body of `T`; `required` when an empty body (read as `{}`) would not do.
    fn body<T: ToSchema>(mut self, schemas: &mut Schemas, required: bool) -> Self {
        let schema = schemas.reference::<T>();
        self.body = Some(
            RequestBodyBuilder::new()
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build(),
        );
        self.has_body = true;
        self
    }

    fn describe(mut self, d: &'static str) -> Self {
        self.description = Some(d);
        self
    }
}

/// What each action takes and answers. Exhaustive: a new action must be described here.
fn io(action: Action, s: &mut Schemas) -> Io {
    use crate as api;
    use Action as A;
    let io = Io::new();
    match action {
        A::Info => io.answer(s.reference::<api::DaemonInfo>()),
        A::OpenApi => io.answer(
            ObjectBuilder::new()
                .description(Some("An OpenAPI 3 document"))
                .into(),
        ),
        A::Metrics => io,
        A::Events => io
            .query::<api::EventsQuery>()
            .answer(s.reference::<api::Event>()),
        A::ListTemplates => io.answer(s.list::<api::TemplateInfo>()),
        A::ImportTemplate => {
            let mut io = io
                .query::<api::ImportQuery>()
                .answer(s.reference::<api::ImportEvent>())
                .describe(IMPORT);
            let json = s.reference::<api::ImportTemplate>();
            io.body = Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(json)).build(),
                    )
                    .content(
                        "application/octet-stream",
                        ContentBuilder::new().schema(Some(binary())).build(),
                    )
                    .build(),
            );
            io.has_body = true;
            io
        }
        A::TemplateInfo => io.answer(s.reference::<api::TemplateInfo>()),
        A::RemoveTemplate => io.describe("`NAME@N` removes version N only."),
        A::BuildTemplate => io
            .body::<api::BuildTemplate>(s, true)
            .answer(s.reference::<api::ImportEvent>()),
        A::PatchTemplate => io
            .body::<api::PatchTemplate>(s, false)
            .answer(s.reference::<api::ImportEvent>()),
        A::RollbackTemplate => io
            .body::<api::RollbackRequest>(s, false)
            .answer(s.reference::<api::TemplateInfo>()),
        A::Rollout => io
            .body::<api::RolloutRequest>(s, false)
            .answer(s.reference::<api::RolloutEvent>()),
        A::CollectGarbage => io.answer(s.reference::<api::GcReport>()),
        A::ListInstances => io.answer(s.list::<api::InstanceInfo>()),
        A::CreateInstance => io
            .body::<api::CreateInstance>(s, true)
            .answer(s.reference::<api::InstanceInfo>()),
        A::InstanceInfo
        | A::StartInstance
        | A::PauseInstance
        | A::ResumeInstance
        | A::RestoreSnapshot => io.answer(s.reference::<api::InstanceInfo>()),
        A::RemoveInstance => io.query::<api::RemoveQuery>(),
        A::StopInstance | A::RestartInstance | A::ResetInstance => io
            .body::<api::StopRequest>(s, false)
            .answer(s.reference::<api::InstanceInfo>()),
        A::RenameInstance => io
            .body::<api::RenameRequest>(s, true)
            .answer(s.reference::<api::InstanceInfo>()),
        A::SetLimits => io
            .body::<api::SetLimits>(s, true)
            .answer(s.reference::<api::SetOutcome>()),
        A::Exec => io.body::<api::ExecRequest>(s, true).describe(UPGRADE),
        A::Terminal => io.query::<api::TerminalQuery>().describe(WEBSOCKET),
        A::Console => io.body::<api::ConsoleRequest>(s, false).describe(UPGRADE),
        A::Logs => io.query::<api::LogsQuery>(),
        A::Run => io.body::<api::CreateInstance>(s, true).describe(UPGRADE),
        A::ListSnapshots => io.answer(s.list::<api::SnapshotInfo>()),
        A::CreateSnapshot => io
            .body::<api::CreateSnapshot>(s, false)
            .answer(s.reference::<api::SnapshotInfo>()),
        A::SnapshotInfo => io.answer(s.reference::<api::SnapshotInfo>()),
        A::RemoveSnapshot
        | A::RemoveNetwork
        | A::RemoveChannel
        | A::RemoveFlavor
        | A::RemoveVolume
        | A::RemoveSchedule
        | A::RevokeToken
        | A::Logout => io,
        A::CloneInstance => io
            .body::<api::CloneRequest>(s, true)
            .answer(s.reference::<api::InstanceInfo>()),
        A::Publish => io
            .body::<api::PublishRequest>(s, true)
            .answer(s.reference::<api::TemplateInfo>()),
        A::ListNetworks => io.answer(s.list::<api::NetworkInfo>()),
        A::CreateNetwork => io
            .body::<api::CreateNetwork>(s, true)
            .answer(s.reference::<api::NetworkInfo>()),
        A::NetworkInfo => io.answer(s.reference::<api::NetworkInfo>()),
        A::ListChannels => io.answer(s.list::<api::ChannelInfo>()),
        A::CreateChannel => io
            .body::<api::CreateChannel>(s, true)
            .answer(s.reference::<api::ChannelInfo>()),
        A::ListFlavors => io.answer(s.list::<api::FlavorInfo>()),
        A::CreateFlavor => io
            .body::<api::CreateFlavor>(s, true)
            .answer(s.reference::<api::FlavorInfo>()),
        A::FlavorInfo => io.answer(s.reference::<api::FlavorInfo>()),
        A::Stats => io
            .query::<api::StatsQuery>()
            .answer(s.list::<api::InstanceStats>()),
        A::ListVolumes => io.answer(s.list::<api::VolumeInfo>()),
        A::CreateVolume => io
            .body::<api::CreateVolume>(s, true)
            .answer(s.reference::<api::VolumeInfo>()),
        A::VolumeInfo => io.answer(s.reference::<api::VolumeInfo>()),
        A::AttachVolume => io
            .body::<api::AttachVolume>(s, true)
            .answer(s.reference::<api::VolumeInfo>()),
        A::DetachVolume => io
            .body::<api::DetachVolume>(s, true)
            .answer(s.reference::<api::VolumeInfo>()),
        A::ListAllSchedules | A::ListSchedules => io.answer(s.list::<api::ScheduleInfo>()),
        A::AddSchedule => io
            .body::<api::CreateSchedule>(s, true)
            .answer(s.reference::<api::ScheduleInfo>()),
        A::ListTokens => io.answer(s.list::<api::TokenInfo>()),
        A::CreateToken => io
            .body::<api::CreateToken>(s, true)
            .answer(s.reference::<api::CreatedToken>()),
        A::Login => io.body::<api::LoginRequest>(s, true).describe(
            "Answers `Set-Cookie: mayfly_session=ID; HttpOnly; Secure; SameSite=Strict; \
             Path=/`.",
        ),
    }
}

const IMPORT: &str = "\
The source is a path on the daemon's host (a JSON `ImportTemplate` body), or the body itself: \
an archive (`.tar`, `.tar.gz`, `.tar.zst`, an OCI layout or a `docker save` archive), with \
the template's name in `?name=` (the other query parameters apply to archives only).

By default the answer waits for the import to end: `201` with the template, or the error. \
A client that sends `Accept: application/x-ndjson` is answered as soon as the import is under \
way: `200` and `ImportEvent` lines, the last of which is the outcome (`done` or `error`).";

const UPGRADE: &str = "\
Needs `Connection: Upgrade` and `Upgrade: mayfly-stream`; answers `101 Switching Protocols`, \
after which the connection carries frames both ways: one kind byte, a big-endian u32 payload \
length (at most 1 MiB), the payload. Client to daemon: 0 stdin bytes (counted against the \
credit), 1 stdin EOF, 2 resize (rows u16, cols u16), 3 signal (i32), 9 kill. Daemon to \
client: 8 credit (u32: more stdin bytes allowed; the first frame), 4 stdout bytes, 5 stderr \
bytes, and last 6 exit (i32, shell-style) or 7 error (UTF-8 message). A refusal before the \
upgrade is an ordinary error answer.";

const WEBSOCKET: &str = "\
A WebSocket upgrade (`Upgrade: websocket`); over the web session the `Origin`'s host:port \
must be the request's `Host`. Binary frames carry terminal bytes both ways; the page sends \
text frames `{\"resize\":{\"cols\":C,\"rows\":R}}`; the daemon sends a text frame \
`{\"exit\":CODE}` before it closes.";

/// The success status of an answer.
fn success_status(answer: Answer) -> String {
    match answer {
        Answer::Json(status) => status.to_string(),
        Answer::Empty => "204".to_owned(),
        Answer::Upgrade | Answer::WebSocket => "101".to_owned(),
        Answer::Ndjson | Answer::Bytes | Answer::Text => "200".to_owned(),
    }
}

/// The success response of an action.
fn success(action: Action, answer: Answer, schema: Option<RefOr<Schema>>) -> Response {
    let json = |schema: Option<RefOr<Schema>>| ContentBuilder::new().schema(schema).build();
    match answer {
        Answer::Json(_) => ResponseBuilder::new()
            .description("Done")
            .content("application/json", json(schema))
            .build(),
        Answer::Empty => ResponseBuilder::new().description("Done").build(),
        Answer::Ndjson => {
            let mut r = ResponseBuilder::new()
                .description(
                    "One JSON object per line (each matching the schema) until the job ends",
                )
                .content(NDJSON, json(schema.clone()));
            if action == Action::ImportTemplate {
                r = ResponseBuilder::new()
                    .description(
                        "With `Accept: application/x-ndjson`: one `ImportEvent` per line, the \
                         last one the outcome",
                    )
                    .content(NDJSON, json(schema));
            }
            r.build()
        }
        Answer::Upgrade => {
            let mut r = ResponseBuilder::new()
                .description("Switching to the `mayfly-stream` framing (see the description)")
                .header("Connection", header("`Upgrade`"))
                .header("Upgrade", header("`mayfly-stream`"));
            if action == Action::Run {
                r = r
                    .header(stream::INSTANCE_HEADER, header("The instance created"))
                    .header(stream::INSTANCE_ID_HEADER, header("Its id (never reused)"));
            }
            r.build()
        }
        Answer::WebSocket => ResponseBuilder::new()
            .description("Switching to a WebSocket (see the description)")
            .header("Upgrade", header("`websocket`"))
            .build(),
        Answer::Bytes => ResponseBuilder::new()
            .description(
                "The console log's bytes, as written; with `?follow=true` the answer stays \
                 open and carries what is appended until the instance is removed",
            )
            .content("application/octet-stream", json(Some(binary())))
            .build(),
        Answer::Text => ResponseBuilder::new()
            .description("Prometheus metrics (text exposition format)")
            .content(PROMETHEUS_TEXT, json(Some(text())))
            .content(OPENMETRICS_TEXT, json(Some(text())))
            .build(),
    }
}

/// The headers an upgrade needs.
fn upgrade_headers(mut op: OperationBuilder, answer: Answer) -> OperationBuilder {
    let protocol = if answer == Answer::Upgrade {
        stream::UPGRADE_PROTOCOL
    } else {
        "websocket"
    };
    for (name, value) in [("Connection", "Upgrade"), ("Upgrade", protocol)] {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([value])),
                )),
        );
    }
    op
}

/// The statuses an action may answer with the error body: 400 for a bad path, query or body;
/// 404 for a name that does not exist; 409 for a change refused in the resource's state; 413
/// for a body too large; 401, 403 and 429 over TCP (credentials, permissions, too many
/// requests); 500 and 503 for the daemon's own failures.
fn error_statuses(action: Action, has_body: bool, has_query: bool) -> Vec<u16> {
    let spec = action.spec();
    let has_params = spec.path.contains('{');
    let mut codes = vec![
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::TooManyRequests,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];
    if has_params || has_body || has_query || matches!(spec.answer, Answer::Upgrade) {
        codes.push(ErrorCode::InvalidArgument);
    }
    if has_params || has_body {
        codes.push(ErrorCode::NotFound);
    }
    if spec.changes {
        codes.push(ErrorCode::WrongState);
    }
    if has_body {
        codes.push(ErrorCode::TooLarge);
    }
    let mut statuses: Vec<u16> = codes.into_iter().map(ErrorCode::http_status).collect();
    statuses.sort_unstable();
    statuses.dedup();
    statuses
}

/// Every status an error may have (see [`ErrorCode::http_status`]; 405 is for paths without
/// the method, which the document does not list).
const ERROR_STATUSES: [u16; 9] = [400, 401, 403, 404, 409, 413, 429, 500, 503];

/// The name of an error status's response among the components.
fn error_name(status: u16) -> String {
    format!("Error{status}")
}

/// The response of an error status.
fn error_response(status: u16) -> Response {
    let what = match status {
        400 => "Invalid request: a path segment, query parameter or body field",
        401 => "No credentials, or unknown or revoked ones (over TCP)",
        403 => "Not allowed to the caller (e.g. a cookie request without `X-Mayfly-Request: 1`)",
        404 => "A named resource does not exist",
        409 => "Refused in the resource's state (exists, in use, busy, wrong state)",
        413 => "The request body is too large",
        429 => "Too many requests or streams open at once",
        503 => "The host lacks what the action needs",
        _ => "The daemon failed",
    };
    ResponseBuilder::new()
        .description(what)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn binary() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .into()
}

fn text() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

/// The `{name}`s of a path template, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn path_param_doc(name: &str) -> &'static str {
    match name {
        "snapshot" => "The snapshot's name",
        "id" => "The schedule's id (a whole number)",
        _ => "The name of the resource (for a template, `NAME` or `NAME@N`)",
    }
}

/// The query parameters of a query type: the properties of its object schema.
fn query_params(schema: &RefOr<Schema>) -> Vec<utoipa::openapi::path::Parameter> {
    let RefOr::T(Schema::Object(object)) = schema else {
        return Vec::new();
    };
    object
        .properties
        .iter()
        .map(|(name, property)| {
            let description = match property {
                RefOr::T(Schema::Object(o)) => o.description.clone(),
                _ => None,
            };
            // A query parameter is absent or has a value: never JSON's null.
            let property = match property {
                RefOr::T(Schema::Object(o)) => {
                    let mut o = o.clone();
                    if let SchemaType::Array(types) = &o.schema_type {
                        let types: Vec<Type> = types
                            .iter()
                            .filter(|t| **t != Type::Null)
                            .cloned()
                            .collect();
                        if let [one] = types.as_slice() {
                            o.schema_type = SchemaType::Type(one.clone());
                        }
                    }
                    RefOr::T(Schema::Object(o))
                }
                other => other.clone(),
            };
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if object.required.contains(name) {
                    Required::True
                } else {
                    Required::False
                })
                .description(description)
                .schema(Some(property))
                .build()
        })
        .collect()
}

/// The schemas the document refers to, by name.
#[derive(Default)]
struct Schemas(BTreeMap<String, RefOr<Schema>>);

impl Schemas {
    /// A reference to `T`'s schema, which (and whatever it refers to) goes to the components.
    fn reference<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let name = T::name().into_owned();
        let mut more = Vec::new();
        T::schemas(&mut more);
        self.0.extend(more);
        self.0.insert(name.clone(), T::schema());
        Ref::from_schema_name(name).into()
    }

    /// A list of `T`.
    fn list<T: ToSchema>(&mut self) -> RefOr<Schema> {
        ArrayBuilder::new().items(self.reference::<T>()).into()
    }

    fn into_sorted(self) -> BTreeMap<String, RefOr<Schema>> {
        self.0
    }
}

/// A string with a description and an example (for types with a string form).
pub(crate) fn string_schema(description: &str, example: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples(example)
        .into()
}

/// A string that matches `pattern`.
pub(crate) fn pattern_schema(description: &str, pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .into()
}

/// A non-negative number.
pub(crate) fn number_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some(description))
        .minimum(Some(0))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed copy, relative to this crate.
    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    #[test]
    fn the_committed_document_is_up_to_date() {
        let now = json();
        if std::env::var_os("MAYFLY_WRITE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &now).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == now,
            "docs/openapi.json is stale (or missing): write it again with \
             `MAYFLY_WRITE_OPENAPI=1 cargo test -p mayfly-api --lib openapi` and commit it"
        );
    }

    #[test]
    fn every_action_is_an_operation_with_its_id() {
        let doc = serde_json::to_value(document()).expect("serialize");
        for spec in ACTIONS {
            let op = &doc["paths"][spec.path][spec.method.as_str().to_lowercase()];
            assert_eq!(
                op["operationId"],
                spec.id,
                "{} {}",
                spec.method.as_str(),
                spec.path
            );
        }
    }

    #[test]
    fn every_referenced_schema_is_defined() {
        let text = json();
        let doc: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let prefix = "\"#/components/schemas/";
        for piece in text.split(prefix).skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "`{name}` is referred to but not defined"
            );
        }
    }
}
