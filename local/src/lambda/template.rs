//! `template.yaml` as the local stack's configuration: the functions (binary, timeout,
//! memory, log level), their environment and IAM statements with every intrinsic
//! function resolved against the local resources, their HTTP API routes, schedules and
//! the inbox stream's event source mapping. Nothing here restates the template: what the
//! template does not say, the local stack does not do, and what it cannot resolve stops
//! the start with one line naming the function and the value.

use super::iam::Statement;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One line, naming what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template.yaml: {}", self.0)
    }
}
impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// What the local deployment's resources resolve to (`!Ref`, `!GetAtt`, pseudo
/// parameters), and the parameter values given to it.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    pub stack_name: String,
    pub region: String,
    pub account: String,
    pub parameters: HashMap<String, String>,
    /// `!Ref <logical id>` of a resource.
    pub refs: HashMap<String, String>,
    /// `!GetAtt <logical id>.<attribute>`.
    pub attrs: HashMap<(String, String), String>,
    /// Resolve a defined resource without a local value to a placeholder (`<Id>` or
    /// `<Id.Attr>`) instead of refusing: for reading the template's grants only.
    pub placeholders: bool,
}

impl Bindings {
    pub fn partition(&self) -> &str {
        "aws"
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub function: String,
}

impl Route {
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub expression: String,
    pub every: Duration,
}

/// The DynamoDB event source of a function, as Lambda's event source mapping runs it.
#[derive(Debug, Clone)]
pub struct StreamSource {
    pub name: String,
    /// The table (logical id) whose stream is read.
    pub table: String,
    pub starting_position: String,
    /// Batch size and window, filter, failure reporting, bisection, retries and record
    /// age (`function_arn` is the deployment's, left empty here).
    pub mapping: crate::stream::MappingConfig,
    /// The on-failure SQS queue (logical id).
    pub on_failure_queue: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary` (the cargo binary that ships as `bootstrap`).
    pub binary: String,
    pub timeout: Duration,
    pub memory_mb: u64,
    pub reserved_concurrency: Option<usize>,
    pub env: BTreeMap<String, String>,
    pub statements: Vec<Statement>,
    pub routes: Vec<Route>,
    pub schedules: Vec<Schedule>,
    pub streams: Vec<StreamSource>,
    pub log_format: String,
    pub application_log_level: String,
    /// How Lambda retries its asynchronous invocations (EventBridge's schedules) and
    /// where it sends the ones that fail (`EventInvokeConfig`).
    pub async_invoke: AsyncInvokeConfig,
}

/// `EventInvokeConfig`, with Lambda's defaults when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncInvokeConfig {
    /// Retries after a failed invocation (0-2; default 2).
    pub maximum_retry_attempts: u32,
    /// An event older than this is not tried again (60-21600 s; default 21600).
    pub maximum_event_age: Duration,
    /// The on-failure SQS queue (logical id).
    pub on_failure_queue: Option<String>,
}

impl Default for AsyncInvokeConfig {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 2,
            maximum_event_age: Duration::from_secs(21_600),
            on_failure_queue: None,
        }
    }
}

/// A function's `EventInvokeConfig`; an SQS on-failure destination adds SAM's
/// `sqs:SendMessage` grant to the role.
fn async_invoke_config(
    p: &Value,
    b: &Bindings,
    raw: &Value,
    resources: &serde_yaml::Mapping,
    id: &str,
    statements: &mut Vec<Statement>,
) -> Result<AsyncInvokeConfig, TemplateError> {
    let Some(c) = p.get("EventInvokeConfig") else {
        return Ok(AsyncInvokeConfig::default());
    };
    let at = format!("{id}.EventInvokeConfig");
    let mut out = AsyncInvokeConfig::default();
    if let Some(n) = duration_secs(c.get("MaximumRetryAttempts"), b, raw, &at)? {
        if !(0..=2).contains(&n) {
            return err(format!("{at}: MaximumRetryAttempts {n} is outside 0..2"));
        }
        out.maximum_retry_attempts = n as u32;
    }
    if let Some(n) = duration_secs(c.get("MaximumEventAgeInSeconds"), b, raw, &at)? {
        if !(60..=21_600).contains(&n) {
            return err(format!(
                "{at}: MaximumEventAgeInSeconds {n} is outside 60..21600"
            ));
        }
        out.maximum_event_age = Duration::from_secs(n as u64);
    }
    if let Some(of) = c.get("DestinationConfig").and_then(|d| d.get("OnFailure")) {
        if of.get("Type").and_then(Value::as_str) != Some("SQS") {
            return err(format!(
                "{at}: only an SQS OnFailure destination is run locally"
            ));
        }
        let Some(q) = get_att_resource(of.get("Destination")) else {
            return err(format!(
                "{at}: OnFailure.Destination must be !GetAtt <queue>.Arn"
            ));
        };
        if resources.get(Value::String(q.clone())).is_none() {
            return err(format!("{at}: OnFailure names an unknown queue {q}"));
        }
        statements.push(Statement {
            sid: Some("SAM:EventInvokeConfigOnFailure".into()),
            allow: true,
            actions: vec!["sqs:SendMessage".into()],
            resources: vec![get_att(&q, "Arn", b, raw, &at)?],
        });
        out.on_failure_queue = Some(q);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Template {
    pub functions: Vec<FunctionDef>,
    /// Parameters with their AllowedValues (for tests: the most verbose LogLevel).
    pub allowed_values: HashMap<String, Vec<String>>,
    /// The SecretString of each `AWS::SecretsManager::Secret`, resolved.
    pub secrets: Vec<(String, Option<String>)>,
    /// Logical ids by resource type.
    pub resource_types: BTreeMap<String, String>,
    /// The HTTP API stage's throttling (`DefaultRouteSettings`): each route's own token
    /// bucket, as API Gateway applies it.
    pub throttle: Option<RouteThrottle>,
}

/// `ThrottlingBurstLimit` (bucket size) and `ThrottlingRateLimit` (requests per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteThrottle {
    pub burst: u32,
    pub rate: f64,
}

/// The `AWS::Serverless::HttpApi`'s `DefaultRouteSettings` throttling, if it sets one.
/// `RouteSettings` is refused: per-route keys can fail a first deploy (the stage may be
/// made before the routes), so the template keeps to the default.
fn route_throttle(raw: &Value, b: &Bindings) -> Result<Option<RouteThrottle>, TemplateError> {
    let mut out = None;
    for id in resources_of_type(raw, "AWS::Serverless::HttpApi") {
        let p = &raw["Resources"][id.as_str()]["Properties"];
        if p.get("RouteSettings").is_some() {
            return err(format!(
                "{id}: RouteSettings is not supported by the local stack (DefaultRouteSettings is)"
            ));
        }
        let Some(d) = p.get("DefaultRouteSettings") else {
            continue;
        };
        let num = |k: &str| -> Result<Option<f64>, TemplateError> {
            let at = format!("{id}.DefaultRouteSettings.{k}");
            match d.get(k) {
                None => Ok(None),
                Some(v) => {
                    let s = resolve(v, b, raw, &at)?;
                    s.parse::<f64>()
                        .map(Some)
                        .map_err(|_| TemplateError(format!("{at}: {s} is not a number")))
                }
            }
        };
        match (num("ThrottlingBurstLimit")?, num("ThrottlingRateLimit")?) {
            (None, None) => {}
            (Some(burst), Some(rate)) if burst >= 0.0 && rate >= 0.0 => {
                out = Some(RouteThrottle {
                    burst: burst as u32,
                    rate,
                });
            }
            _ => {
                return err(format!(
                    "{id}.DefaultRouteSettings: give both ThrottlingBurstLimit and ThrottlingRateLimit, not negative"
                ));
            }
        }
    }
    Ok(out)
}

impl Template {
    pub fn function(&self, logical_id: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.logical_id == logical_id)
    }
    pub fn routes(&self) -> Vec<Route> {
        self.functions
            .iter()
            .flat_map(|f| f.routes.iter().cloned())
            .collect()
    }
}

/// The template's raw YAML: parameters and resources of each type, before resolution
/// (the local stack needs the resource list to know what to create and bind).
pub fn parse_raw(text: &str) -> Result<Value, TemplateError> {
    serde_yaml::from_str(text).map_err(|e| TemplateError(format!("not valid YAML: {e}")))
}

/// Logical ids of the resources of one type, in template order.
pub fn resources_of_type(raw: &Value, ty: &str) -> Vec<String> {
    raw.get("Resources")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Parameter values: the template's defaults, overridden by `given`; a value outside
/// AllowedValues is refused as CloudFormation refuses it.
pub fn parameters(
    raw: &Value,
    given: &HashMap<String, String>,
) -> Result<HashMap<String, String>, TemplateError> {
    let mut out = HashMap::new();
    let Some(params) = raw.get("Parameters").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (k, p) in params {
        let Some(name) = k.as_str() else { continue };
        let value = match given.get(name) {
            Some(v) => Some(v.clone()),
            None => p.get("Default").map(scalar_string),
        };
        let Some(value) = value else {
            return err(format!(
                "parameter {name} has no Default and the local stack gives no value"
            ));
        };
        if let Some(allowed) = p.get("AllowedValues").and_then(Value::as_sequence) {
            let allowed: Vec<String> = allowed.iter().map(scalar_string).collect();
            if !allowed.contains(&value) {
                return err(format!(
                    "parameter {name}={value} is not one of its AllowedValues {allowed:?}"
                ));
            }
        }
        out.insert(name.to_string(), value);
    }
    for name in given.keys() {
        if !out.contains_key(name) {
            return err(format!("parameter {name} is not declared in Parameters"));
        }
    }
    Ok(out)
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// Resolves one value with intrinsic functions to a string.
pub fn resolve(v: &Value, b: &Bindings, raw: &Value, at: &str) -> Result<String, TemplateError> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(scalar_string(v)),
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            intrinsic(tag, &t.value, b, raw, at)
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next().expect("one entry");
            match k.as_str() {
                Some("Ref") => intrinsic("Ref", inner, b, raw, at),
                Some(f) if f.starts_with("Fn::") => intrinsic(&f[4..], inner, b, raw, at),
                _ => err(format!("{at}: a map where a value was expected")),
            }
        }
        _ => err(format!("{at}: cannot resolve {v:?}")),
    }
}

fn ref_value(name: &str, b: &Bindings, raw: &Value, at: &str) -> Result<String, TemplateError> {
    match name {
        "AWS::StackName" => return Ok(b.stack_name.clone()),
        "AWS::Region" => return Ok(b.region.clone()),
        "AWS::AccountId" => return Ok(b.account.clone()),
        "AWS::Partition" => return Ok(b.partition().to_string()),
        "AWS::URLSuffix" => return Ok("amazonaws.com".into()),
        "AWS::NoValue" => return Ok(NO_VALUE.into()),
        _ => {}
    }
    if let Some(v) = b.parameters.get(name) {
        return Ok(v.clone());
    }
    if let Some(v) = b.refs.get(name) {
        return Ok(v.clone());
    }
    if raw.get("Resources").and_then(|r| r.get(name)).is_some() {
        if b.placeholders {
            return Ok(format!("<{name}>"));
        }
        return err(format!(
            "{at}: !Ref {name}: the local stack has no value for this resource"
        ));
    }
    err(format!(
        "{at}: !Ref {name}: no parameter or resource {name} is defined"
    ))
}

fn get_att(
    res: &str,
    attr: &str,
    b: &Bindings,
    raw: &Value,
    at: &str,
) -> Result<String, TemplateError> {
    if let Some(v) = b.attrs.get(&(res.to_string(), attr.to_string())) {
        return Ok(v.clone());
    }
    if raw.get("Resources").and_then(|r| r.get(res)).is_none() {
        return err(format!(
            "{at}: !GetAtt {res}.{attr}: no resource {res} is defined"
        ));
    }
    if b.placeholders {
        return Ok(format!("<{res}.{attr}>"));
    }
    err(format!(
        "{at}: !GetAtt {res}.{attr}: the local stack has no value for this attribute"
    ))
}

fn intrinsic(
    f: &str,
    arg: &Value,
    b: &Bindings,
    raw: &Value,
    at: &str,
) -> Result<String, TemplateError> {
    match f {
        "Ref" => ref_value(arg.as_str().unwrap_or_default(), b, raw, at),
        "GetAtt" => {
            let (res, attr) = match arg {
                Value::String(s) => match s.split_once('.') {
                    Some((r, a)) => (r.to_string(), a.to_string()),
                    None => return err(format!("{at}: !GetAtt {s} has no attribute")),
                },
                Value::Sequence(s) if s.len() == 2 => (scalar_string(&s[0]), scalar_string(&s[1])),
                _ => return err(format!("{at}: malformed !GetAtt")),
            };
            get_att(&res, &attr, b, raw, at)
        }
        "Sub" => {
            let (text, vars) = match arg {
                Value::String(s) => (s.clone(), None),
                Value::Sequence(s) if s.len() == 2 => {
                    (scalar_string(&s[0]), s[1].as_mapping().cloned())
                }
                _ => return err(format!("{at}: malformed !Sub")),
            };
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("${") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                let Some(j) = after.find('}') else {
                    return err(format!("{at}: !Sub has an unclosed ${{"));
                };
                let name = &after[..j];
                if let Some(lit) = name.strip_prefix('!') {
                    out.push_str("${");
                    out.push_str(lit);
                    out.push('}');
                } else if let Some(v) = vars
                    .as_ref()
                    .and_then(|m| m.get(Value::String(name.to_string())))
                {
                    out.push_str(&resolve(v, b, raw, at)?);
                } else if let Some((r, a)) = name.split_once('.') {
                    out.push_str(&get_att(r, a, b, raw, at)?);
                } else {
                    out.push_str(&ref_value(name, b, raw, at)?);
                }
                rest = &after[j + 1..];
            }
            out.push_str(rest);
            Ok(out)
        }
        "FindInMap" => {
            let Some(s) = arg.as_sequence().filter(|s| s.len() == 3) else {
                return err(format!("{at}: malformed !FindInMap"));
            };
            let map = resolve(&s[0], b, raw, at)?;
            let k1 = resolve(&s[1], b, raw, at)?;
            let k2 = resolve(&s[2], b, raw, at)?;
            raw.get("Mappings")
                .and_then(|m| m.get(map.as_str()))
                .and_then(|m| m.get(k1.as_str()))
                .and_then(|m| m.get(k2.as_str()))
                .map(scalar_string)
                .ok_or_else(|| {
                    TemplateError(format!("{at}: !FindInMap [{map}, {k1}, {k2}] has no value"))
                })
        }
        "Join" => {
            let Some(s) = arg.as_sequence().filter(|s| s.len() == 2) else {
                return err(format!("{at}: malformed !Join"));
            };
            let sep = scalar_string(&s[0]);
            let parts = s[1]
                .as_sequence()
                .ok_or_else(|| TemplateError(format!("{at}: malformed !Join")))?
                .iter()
                .map(|p| resolve(p, b, raw, at))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(parts.join(&sep))
        }
        "If" => {
            let Some(s) = arg.as_sequence().filter(|s| s.len() == 3) else {
                return err(format!("{at}: malformed !If"));
            };
            let name = scalar_string(&s[0]);
            let branch = if condition(&name, b, raw, at, 0)? {
                &s[1]
            } else {
                &s[2]
            };
            resolve(branch, b, raw, at)
        }
        other => err(format!(
            "{at}: the intrinsic function {other} is not supported by the local stack"
        )),
    }
}

/// What `!Ref AWS::NoValue` resolves to: the property is then absent
/// ([`resolve_optional`]).
const NO_VALUE: &str = "\u{0}AWS::NoValue";

/// A property that may be `!Ref AWS::NoValue` (through `!If`): `None` then.
pub fn resolve_optional(
    v: &Value,
    b: &Bindings,
    raw: &Value,
    at: &str,
) -> Result<Option<String>, TemplateError> {
    let s = resolve(v, b, raw, at)?;
    Ok((s != NO_VALUE).then_some(s))
}

/// A condition of the template's `Conditions` section, evaluated with the parameters.
fn condition(
    name: &str,
    b: &Bindings,
    raw: &Value,
    at: &str,
    depth: usize,
) -> Result<bool, TemplateError> {
    let Some(c) = raw.get("Conditions").and_then(|c| c.get(name)) else {
        return err(format!("{at}: no condition {name} is defined"));
    };
    if depth > 16 {
        return err(format!("{at}: condition {name} refers to itself"));
    }
    condition_value(c, b, raw, at, depth + 1)
}

fn condition_value(
    v: &Value,
    b: &Bindings,
    raw: &Value,
    at: &str,
    depth: usize,
) -> Result<bool, TemplateError> {
    let (f, arg) = match v {
        Value::Tagged(t) => (
            t.tag.to_string().trim_start_matches('!').to_string(),
            &t.value,
        ),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next().expect("one entry");
            let k = k.as_str().unwrap_or_default();
            (k.strip_prefix("Fn::").unwrap_or(k).to_string(), inner)
        }
        _ => return err(format!("{at}: a condition must be a condition function")),
    };
    let list = || {
        arg.as_sequence()
            .ok_or_else(|| TemplateError(format!("{at}: malformed !{f}")))
    };
    match f.as_str() {
        "Condition" => condition(&scalar_string(arg), b, raw, at, depth),
        "Equals" => {
            let l = list()?;
            if l.len() != 2 {
                return err(format!("{at}: !Equals takes two values"));
            }
            Ok(resolve(&l[0], b, raw, at)? == resolve(&l[1], b, raw, at)?)
        }
        "Not" => {
            let l = list()?;
            if l.len() != 1 {
                return err(format!("{at}: !Not takes one condition"));
            }
            Ok(!condition_value(&l[0], b, raw, at, depth)?)
        }
        "And" | "Or" => {
            let mut out = f == "And";
            for c in list()? {
                let v = condition_value(c, b, raw, at, depth)?;
                out = if f == "And" { out && v } else { out || v };
            }
            Ok(out)
        }
        other => err(format!(
            "{at}: the condition function {other} is not supported by the local stack"
        )),
    }
}

fn strings(
    v: Option<&Value>,
    b: &Bindings,
    raw: &Value,
    at: &str,
) -> Result<Vec<String>, TemplateError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Sequence(s)) => s.iter().map(|x| resolve(x, b, raw, at)).collect(),
        Some(x) => Ok(vec![resolve(x, b, raw, at)?]),
    }
}

/// The resource a `!GetAtt <resource>.<attribute>` (or `[resource, attribute]`) names.
fn get_att_resource(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Tagged(t) if t.tag == "!GetAtt" => match &t.value {
            Value::Sequence(seq) => seq.first().map(scalar_string),
            v => scalar_string(v).split('.').next().map(str::to_string),
        },
        _ => None,
    }
    .filter(|r| !r.is_empty())
}

/// `rate(5 minutes)` (EventBridge's rate expressions); cron is refused: the local stack
/// would not run it on the template's times.
pub fn parse_rate(expr: &str) -> Option<Duration> {
    let inner = expr.strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "minute" if n == 1 => 60,
        "minutes" if n > 1 => 60,
        "hour" if n == 1 => 3600,
        "hours" if n > 1 => 3600,
        "day" if n == 1 => 86_400,
        "days" if n > 1 => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * secs))
}

/// The managed policy SAM attaches to a function with a DynamoDB event
/// (AWSLambdaDynamoDBExecutionRole, less its CloudWatch Logs actions).
fn dynamodb_execution_role() -> Statement {
    Statement {
        sid: Some("SAM:AWSLambdaDynamoDBExecutionRole".into()),
        allow: true,
        actions: vec![
            "dynamodb:DescribeStream".into(),
            "dynamodb:GetRecords".into(),
            "dynamodb:GetShardIterator".into(),
            "dynamodb:ListStreams".into(),
        ],
        resources: vec!["*".into()],
    }
}

fn statements(
    policies: Option<&Value>,
    b: &Bindings,
    raw: &Value,
    fname: &str,
) -> Result<Vec<Statement>, TemplateError> {
    let mut out = Vec::new();
    let list = match policies {
        None => return Ok(out),
        Some(Value::Sequence(s)) => s.clone(),
        Some(other) => vec![other.clone()],
    };
    for p in &list {
        match p {
            Value::String(name) => {
                return err(format!(
                    "{fname}: managed policy {name} is not known to the local stack"
                ));
            }
            Value::Mapping(m) => {
                let Some(st) = m.get(Value::String("Statement".into())) else {
                    let name = m
                        .keys()
                        .next()
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string();
                    return err(format!(
                        "{fname}: SAM policy template {name} is not supported by the local stack; write its statements inline"
                    ));
                };
                let sts = match st {
                    Value::Sequence(s) => s.clone(),
                    other => vec![other.clone()],
                };
                for (i, s) in sts.iter().enumerate() {
                    let sid = s.get("Sid").and_then(Value::as_str).map(str::to_string);
                    let at = format!(
                        "{fname} policy statement {}",
                        sid.clone().unwrap_or_else(|| i.to_string())
                    );
                    if s.get("Condition").is_some()
                        || s.get("NotAction").is_some()
                        || s.get("NotResource").is_some()
                    {
                        return err(format!(
                            "{at}: Condition, NotAction and NotResource are not enforced by the local stack"
                        ));
                    }
                    let effect = s.get("Effect").and_then(Value::as_str).unwrap_or("");
                    let allow = match effect {
                        "Allow" => true,
                        "Deny" => false,
                        _ => return err(format!("{at}: Effect must be Allow or Deny")),
                    };
                    let actions = strings(s.get("Action"), b, raw, &at)?;
                    let resources = strings(s.get("Resource"), b, raw, &at)?;
                    if actions.is_empty() || resources.is_empty() {
                        return err(format!("{at}: needs Action and Resource"));
                    }
                    out.push(Statement {
                        sid,
                        allow,
                        actions,
                        resources,
                    });
                }
            }
            _ => return err(format!("{fname}: a policy must be a map or a name")),
        }
    }
    Ok(out)
}

fn duration_secs(
    v: Option<&Value>,
    b: &Bindings,
    raw: &Value,
    at: &str,
) -> Result<Option<i64>, TemplateError> {
    match v {
        None => Ok(None),
        Some(v) => {
            let s = resolve(v, b, raw, at)?;
            s.parse::<i64>()
                .map(Some)
                .map_err(|_| TemplateError(format!("{at}: {s} is not a number")))
        }
    }
}

/// Every `AWS::Serverless::Function`, resolved.
pub fn load(raw: &Value, b: &Bindings) -> Result<Template, TemplateError> {
    let globals = raw.get("Globals").and_then(|g| g.get("Function"));
    let empty = Value::Null;
    let g = globals.unwrap_or(&empty);
    let mut functions = Vec::new();
    let resources = raw
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| TemplateError("no Resources".into()))?;
    let mut resource_types = BTreeMap::new();
    let mut secrets = Vec::new();
    for (k, r) in resources {
        let Some(id) = k.as_str() else { continue };
        let ty = r
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        resource_types.insert(id.to_string(), ty.clone());
        if ty == "AWS::SecretsManager::Secret" {
            let s = match r.get("Properties").and_then(|p| p.get("SecretString")) {
                Some(v) => Some(resolve(v, b, raw, &format!("{id}.SecretString"))?),
                None => None,
            };
            secrets.push((id.to_string(), s));
        }
        if ty != "AWS::Serverless::Function" {
            continue;
        }
        let p = r.get("Properties").unwrap_or(&empty);
        let prop = |name: &str| p.get(name).or_else(|| g.get(name));
        let binary = r
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|m| m.get("Binary"))
            .and_then(Value::as_str)
            .ok_or_else(|| TemplateError(format!("{id}: Metadata.BuildProperties.Binary is missing, so no binary answers its events")))?
            .to_string();
        let timeout =
            duration_secs(prop("Timeout"), b, raw, &format!("{id}.Timeout"))?.unwrap_or(3);
        if !(1..=900).contains(&timeout) {
            return err(format!("{id}: Timeout {timeout} is outside 1..900"));
        }
        let memory =
            duration_secs(prop("MemorySize"), b, raw, &format!("{id}.MemorySize"))?.unwrap_or(128);
        let reserved = match p.get("ReservedConcurrentExecutions") {
            None => None,
            Some(v) => {
                let at = format!("{id}.ReservedConcurrentExecutions");
                match resolve_optional(v, b, raw, &at)? {
                    None => None,
                    Some(s) => Some(
                        s.parse::<i64>()
                            .map_err(|_| TemplateError(format!("{at}: {s} is not a number")))?,
                    ),
                }
            }
        }
        .map(|n| n.max(0) as usize);
        let mut env = BTreeMap::new();
        for src in [g, p] {
            if let Some(vars) = src
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_mapping)
            {
                for (k, v) in vars {
                    let Some(name) = k.as_str() else { continue };
                    // `!Ref AWS::NoValue` (through `!If`) leaves the variable out.
                    match resolve_optional(v, b, raw, &format!("{id} variable {name}"))? {
                        Some(value) => env.insert(name.to_string(), value),
                        None => env.remove(name),
                    };
                }
            }
        }
        let logging = prop("LoggingConfig");
        let log_format = match logging.and_then(|l| l.get("LogFormat")) {
            Some(v) => resolve(v, b, raw, &format!("{id}.LoggingConfig.LogFormat"))?,
            None => "Text".into(),
        };
        let application_log_level = match logging.and_then(|l| l.get("ApplicationLogLevel")) {
            Some(v) => resolve(
                v,
                b,
                raw,
                &format!("{id}.LoggingConfig.ApplicationLogLevel"),
            )?,
            None => "INFO".into(),
        };
        let mut statements = statements(p.get("Policies"), b, raw, id)?;
        let mut routes = Vec::new();
        let mut schedules = Vec::new();
        let mut streams = Vec::new();
        if let Some(events) = p.get("Events").and_then(Value::as_mapping) {
            for (ek, ev) in events {
                let ename = ek.as_str().unwrap_or("?").to_string();
                let at = format!("{id} event {ename}");
                let ep = ev.get("Properties").unwrap_or(&empty);
                match ev.get("Type").and_then(Value::as_str) {
                    Some("HttpApi") => {
                        let method = ep
                            .get("Method")
                            .map(|v| resolve(v, b, raw, &at))
                            .transpose()?;
                        let path = ep
                            .get("Path")
                            .map(|v| resolve(v, b, raw, &at))
                            .transpose()?;
                        let (Some(method), Some(path)) = (method, path) else {
                            return err(format!("{at}: an HttpApi event needs Method and Path"));
                        };
                        routes.push(Route {
                            method: method.to_uppercase(),
                            path,
                            function: id.to_string(),
                        });
                    }
                    Some("Schedule") => {
                        let expr = ep
                            .get("Schedule")
                            .map(|v| resolve(v, b, raw, &at))
                            .transpose()?
                            .unwrap_or_default();
                        let every = parse_rate(&expr).ok_or_else(|| {
                            TemplateError(format!(
                                "{at}: schedule {expr:?} is not a rate() expression the local stack runs"
                            ))
                        })?;
                        schedules.push(Schedule {
                            name: ename,
                            expression: expr,
                            every,
                        });
                    }
                    Some("DynamoDB") => {
                        let Some(table) = get_att_resource(ep.get("Stream")) else {
                            return err(format!("{at}: Stream must be !GetAtt <table>.StreamArn"));
                        };
                        if resources.get(Value::String(table.clone())).is_none() {
                            return err(format!("{at}: Stream names an unknown table {table}"));
                        }
                        let num = |name: &str| {
                            duration_secs(ep.get(name), b, raw, &format!("{at}.{name}"))
                        };
                        let frt = strings(ep.get("FunctionResponseTypes"), b, raw, &at)?;
                        let event_names = match ep
                            .get("FilterCriteria")
                            .and_then(|f| f.get("Filters"))
                            .and_then(Value::as_sequence)
                        {
                            None => None,
                            Some(filters) => {
                                let mut names = Vec::new();
                                for f in filters {
                                    let pat =
                                        resolve(f.get("Pattern").unwrap_or(&empty), b, raw, &at)?;
                                    let pat: serde_json::Value = serde_json::from_str(&pat)
                                        .map_err(|e| {
                                            TemplateError(format!(
                                                "{at}: filter pattern is not JSON: {e}"
                                            ))
                                        })?;
                                    let obj = pat.as_object().cloned().unwrap_or_default();
                                    if obj.keys().any(|k| k != "eventName") {
                                        return err(format!(
                                            "{at}: the local stack filters on eventName only, not {pat}"
                                        ));
                                    }
                                    for n in obj
                                        .get("eventName")
                                        .and_then(|v| v.as_array())
                                        .into_iter()
                                        .flatten()
                                    {
                                        if let Some(n) = n.as_str() {
                                            names.push(n.to_string());
                                        }
                                    }
                                }
                                Some(names)
                            }
                        };
                        let on_failure_queue = match ep
                            .get("DestinationConfig")
                            .and_then(|d| d.get("OnFailure"))
                        {
                            None => None,
                            Some(of) => {
                                let dest = of.get("Destination");
                                let Some(q) = get_att_resource(dest) else {
                                    return err(format!(
                                        "{at}: OnFailure.Destination must be !GetAtt <queue>.Arn"
                                    ));
                                };
                                if resources.get(Value::String(q.clone())).is_none() {
                                    return err(format!(
                                        "{at}: OnFailure names an unknown queue {q}"
                                    ));
                                }
                                // SAM adds sqs:SendMessage on the destination to the role.
                                statements.push(Statement {
                                    sid: Some("SAM:OnFailureDestination".into()),
                                    allow: true,
                                    actions: vec!["sqs:SendMessage".into()],
                                    resources: vec![get_att(&q, "Arn", b, raw, &at)?],
                                });
                                Some(q)
                            }
                        };
                        statements.push(dynamodb_execution_role());
                        streams.push(StreamSource {
                            name: ename.clone(),
                            table,
                            starting_position: ep
                                .get("StartingPosition")
                                .map(|v| resolve(v, b, raw, &at))
                                .transpose()?
                                .unwrap_or_else(|| "LATEST".into()),
                            mapping: crate::stream::MappingConfig {
                                batch_size: num("BatchSize")?.unwrap_or(100).clamp(1, 10_000)
                                    as usize,
                                batching_window: Duration::from_secs(
                                    num("MaximumBatchingWindowInSeconds")?.unwrap_or(0).max(0)
                                        as u64,
                                ),
                                // Lambda's default is 1; it refuses more than 10.
                                parallelization_factor: match num("ParallelizationFactor")? {
                                    None => 1,
                                    Some(n @ 1..=10) => n as usize,
                                    Some(n) => {
                                        return err(format!(
                                            "{at}.ParallelizationFactor: {n} is outside 1-10"
                                        ));
                                    }
                                },
                                report_batch_item_failures: frt
                                    .iter()
                                    .any(|t| t == "ReportBatchItemFailures"),
                                bisect_on_error: ep
                                    .get("BisectBatchOnFunctionError")
                                    .map(|v| resolve(v, b, raw, &at))
                                    .transpose()?
                                    .is_some_and(|v| v == "true"),
                                maximum_retry_attempts: num("MaximumRetryAttempts")?.unwrap_or(-1),
                                maximum_record_age: num("MaximumRecordAgeInSeconds")?
                                    .filter(|s| *s >= 0)
                                    .map(|s| Duration::from_secs(s as u64)),
                                event_names,
                                function_arn: String::new(),
                            },
                            on_failure_queue,
                        });
                    }
                    Some(other) => {
                        return err(format!(
                            "{at}: event type {other} is not run by the local stack"
                        ));
                    }
                    None => return err(format!("{at}: event without Type")),
                }
            }
        }
        let async_invoke = async_invoke_config(p, b, raw, resources, id, &mut statements)?;
        functions.push(FunctionDef {
            async_invoke,
            logical_id: id.to_string(),
            binary,
            timeout: Duration::from_secs(timeout as u64),
            memory_mb: memory.max(128) as u64,
            reserved_concurrency: reserved,
            env,
            statements,
            routes,
            schedules,
            streams,
            log_format,
            application_log_level,
        });
    }
    let mut allowed_values = HashMap::new();
    if let Some(params) = raw.get("Parameters").and_then(Value::as_mapping) {
        for (k, p) in params {
            if let (Some(name), Some(allowed)) = (
                k.as_str(),
                p.get("AllowedValues").and_then(Value::as_sequence),
            ) {
                allowed_values.insert(
                    name.to_string(),
                    allowed.iter().map(scalar_string).collect(),
                );
            }
        }
    }
    // Two routes with the same key: API Gateway refuses the deployment.
    let mut seen: HashMap<String, String> = HashMap::new();
    for f in &functions {
        for r in &f.routes {
            if let Some(prev) = seen.insert(r.key(), f.logical_id.clone()) {
                return err(format!(
                    "route {} is declared by both {prev} and {}",
                    r.key(),
                    f.logical_id
                ));
            }
        }
    }
    Ok(Template {
        throttle: route_throttle(raw, b)?,
        functions,
        allowed_values,
        secrets,
        resource_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  LogLevel: {Type: String, Default: info, AllowedValues: [debug, info]}
  Days: {Type: Number, Default: 30}
Mappings:
  Levels: {info: {App: INFO}, debug: {App: DEBUG}}
Globals:
  Function:
    Timeout: 10
    LoggingConfig: {LogFormat: JSON, ApplicationLogLevel: !FindInMap [Levels, !Ref LogLevel, App]}
    Environment: {Variables: {G: global}}
Resources:
  Table: {Type: AWS::DynamoDB::Table}
  Q: {Type: AWS::SQS::Queue}
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: fnbin}}
    Properties:
      Timeout: 29
      Environment:
        Variables:
          T: !Ref Table
          P: !Sub "${AWS::StackName}/x/${Days}"
          A: !GetAtt Table.Arn
      Policies:
        - Statement:
            - Sid: S
              Effect: Allow
              Action: [dynamodb:GetItem]
              Resource: [!GetAtt Table.Arn, !Sub "${Table.Arn}/index/*"]
      Events:
        Get:
          Type: HttpApi
          Properties:
            Method: get
            Path: /v1/x/{id}
        Tick: {Type: Schedule, Properties: {Schedule: rate(5 minutes)}}
        S:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Table.StreamArn
            BatchSize: 100
            FunctionResponseTypes: [ReportBatchItemFailures]
            BisectBatchOnFunctionError: true
            MaximumRetryAttempts: 10
            MaximumRecordAgeInSeconds: 3600
            FilterCriteria: {Filters: [{Pattern: '{"eventName":["INSERT"]}'}]}
            DestinationConfig:
              OnFailure:
                Type: SQS
                Destination: !GetAtt Q.Arn
"#;

    fn bindings(raw: &Value) -> Bindings {
        let mut b = Bindings {
            stack_name: "st".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            parameters: parameters(raw, &HashMap::new()).unwrap(),
            ..Default::default()
        };
        b.refs.insert("Table".into(), "tbl".into());
        b.attrs.insert(
            ("Table".into(), "Arn".into()),
            "arn:aws:dynamodb:us-east-1:123456789012:table/tbl".into(),
        );
        b.attrs.insert(
            ("Q".into(), "Arn".into()),
            "arn:aws:sqs:us-east-1:123456789012:q".into(),
        );
        b
    }

    #[test]
    fn resolves_functions() {
        let raw = parse_raw(T).unwrap();
        let t = load(&raw, &bindings(&raw)).unwrap();
        let f = t.function("Fn").unwrap();
        assert_eq!(f.binary, "fnbin");
        assert_eq!(f.timeout, Duration::from_secs(29));
        assert_eq!(f.env["T"], "tbl");
        assert_eq!(f.env["G"], "global");
        assert_eq!(f.env["P"], "st/x/30");
        assert_eq!(f.application_log_level, "INFO");
        assert_eq!(
            f.statements[0].resources[1],
            "arn:aws:dynamodb:us-east-1:123456789012:table/tbl/index/*"
        );
        assert_eq!(f.routes[0].key(), "GET /v1/x/{id}");
        assert_eq!(f.schedules[0].every, Duration::from_secs(300));
        let s = &f.streams[0];
        assert_eq!(s.table, "Table");
        assert_eq!(
            s.mapping.event_names.as_deref(),
            Some(&["INSERT".to_string()][..])
        );
        assert!(s.mapping.bisect_on_error && s.mapping.report_batch_item_failures);
        assert_eq!(s.on_failure_queue.as_deref(), Some("Q"));
        assert!(
            f.statements
                .iter()
                .any(|s| s.actions == ["sqs:SendMessage"])
        );
    }

    #[test]
    fn refuses_what_it_cannot_resolve() {
        let raw = parse_raw(&T.replace("!GetAtt Table.Arn, ", "!GetAtt Tabel.Arn, ")).unwrap();
        let e = load(&raw, &bindings(&raw)).unwrap_err();
        assert!(
            e.to_string().contains("no resource Tabel is defined"),
            "{e}"
        );
        let raw = parse_raw(T).unwrap();
        let mut given = HashMap::new();
        given.insert("LogLevel".to_string(), "trace".to_string());
        let e = parameters(&raw, &given).unwrap_err();
        assert!(e.to_string().contains("AllowedValues"), "{e}");
    }

    #[test]
    fn conditions_choose_a_value_or_no_value() {
        let text =
            std::fs::read_to_string(crate::lambda::workspace_dir().join("template.yaml")).unwrap();
        let raw = parse_raw(&text).unwrap();
        let with = |given: &[(&str, &str)]| {
            let secrets = [("MetaAppSecret", "s"), ("WebhookVerifyToken", "t")];
            let given: HashMap<String, String> = given
                .iter()
                .chain(secrets.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let b = Bindings {
                stack_name: "st".into(),
                region: "us-east-1".into(),
                account: "123456789012".into(),
                parameters: parameters(&raw, &given).unwrap(),
                placeholders: true,
                ..Default::default()
            };
            load(&raw, &b).unwrap()
        };
        let reserved = |t: &Template, f: &str| t.function(f).unwrap().reserved_concurrency;
        let t = with(&[]);
        assert_eq!(reserved(&t, "WebhookFunction"), None, "empty reserves none");
        assert_eq!(reserved(&t, "AdminFunction"), None);
        assert_eq!(
            t.throttle,
            Some(RouteThrottle {
                burst: 5000,
                rate: 5000.0
            })
        );
        let t = with(&[
            ("WebhookReservedConcurrency", "7"),
            ("ApiReservedConcurrency", "3"),
            ("ApiThrottlingRateLimit", "20"),
            ("ApiThrottlingBurstLimit", "40"),
        ]);
        assert_eq!(reserved(&t, "WebhookFunction"), Some(7));
        assert_eq!(reserved(&t, "ConversionsFunction"), Some(3));
        assert_eq!(reserved(&t, "AdminFunction"), Some(3));
        assert_eq!(reserved(&t, "CaptureFunction"), None);
        assert_eq!(
            t.throttle,
            Some(RouteThrottle {
                burst: 40,
                rate: 20.0
            })
        );
        // `AWS::NoValue` is the property's absence.
        let b = Bindings {
            placeholders: true,
            ..Default::default()
        };
        let v: Value = serde_yaml::from_str("!Ref AWS::NoValue").unwrap();
        assert_eq!(resolve_optional(&v, &b, &raw, "x").unwrap(), None);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate(1 day)"), Some(Duration::from_secs(86_400)));
        assert_eq!(
            parse_rate("rate(5 minutes)"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_rate("rate(1 minutes)"), None);
        assert_eq!(parse_rate("cron(0 * * * ? *)"), None);
    }
}
