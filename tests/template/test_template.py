"""Security and wiring properties of template.yaml (the SAM deployment).

Every property is one `check_*` function over the parsed template. `test_*` runs it on
the real template; `test_check_catches` runs it on a copy with the property broken
and expects it to fail, so no check here can pass by accident.

The HTTP API routes are checked against `api-routes.json`, the router's own route table
(generated and kept current by chroma-core's test `api::tests::route_table_is_current`).

Run: `pytest tests/template` (scripts/check-template.sh also runs cfn-lint and
`sam validate --lint`).
"""

import copy
import json
import re
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# Logical id -> cargo binary (package chroma-functions, functions/src/bin/).
FUNCTIONS = {
    "QueryFunction": "query",
    "IngestFunction": "ingest",
    "IngestEventsFunction": "ingest-events",
    "CompactFunction": "compact",
}

# Exactly what chroma_core::aws::dynamodb::DynamoCatalog::ensure_tables creates:
# table suffix -> [(attribute, key type)], every attribute a string.
TABLE_KEYS = {
    "catalog": [("pk", "HASH"), ("sk", "RANGE")],
    "manifests": [("id", "HASH")],
    "api-keys": [("id", "HASH")],
}

DATA_SERVICES = ("s3", "dynamodb", "kms", "sqs")

# What the read path may never do.
WRITE_ACTIONS = {
    "s3:putobject",
    "s3:deleteobject",
    "dynamodb:putitem",
    "dynamodb:updateitem",
    "dynamodb:deleteitem",
    "dynamodb:batchwriteitem",
    "kms:generatedatakey",
    "kms:encrypt",
    "sqs:sendmessage",
}

# POST routes served by the read path.
READ_POSTS = ("/get", "/query", "/search")

# Every (method, path) the HTTP router serves, with its access ("read", "write" or
# "admin"), generated from the Rust side: core/src/api/mod.rs, test
# api::tests::route_table_is_current, which fails when this file is stale.
API_ROUTES = Path(__file__).with_name("api-routes.json")

# Read routes that the template leaves to $default, and so to the ingest function, on
# purpose: the retired v1 API, whose notice (410) either function answers alike; the
# template's catch-all names it.
DEFAULT_READS = {("ANY", "/api/v1"), ("ANY", "/api/v1/{*rest}")}

ENV = [
    "CHROMA_BUCKET",
    "CHROMA_PREFIX",
    "CHROMA_TABLE_PREFIX",
    "CHROMA_KMS_KEY_ID",
    "CHROMA_COMPACTION_QUEUE_URL",
    "CHROMA_LOG_FORMAT",
    "CHROMA_METRICS_NAMESPACE",
    "CHROMA_RATE_LIMIT",
    "CHROMA_KNN_INDEX",
    "CHROMA_JWT_ISSUER",
    "CHROMA_JWT_AUDIENCE",
    "CHROMA_JWT_JWKS_URL",
]

# The functions' Embedded Metric Format metrics: name -> labels. Every record also has the
# dimension `function`, so each metric's dimension set is {function} | labels, exactly
# what the dashboard's SEARCH expressions must name to find it.
EMF_METRICS = {
    "chroma_http_requests_total": {"method", "route", "status"},
    "chroma_http_request_duration_seconds": {"method", "route"},
    "chroma_read_duration_seconds": {"op"},
    "chroma_read_rows_total": {"op"},
    "chroma_storage_requests_total": {"op"},
    "chroma_storage_read_bytes_total": set(),
    "chroma_storage_written_bytes_total": set(),
    "chroma_cache_hits_total": {"cache"},
    "chroma_cache_misses_total": {"cache"},
    "chroma_segments_searched": set(),
    "chroma_unindexed_ops": {"collection"},
    "chroma_compaction_duration_seconds": set(),
    "chroma_compactions_total": {"outcome"},
    "chroma_ingest_files_total": {"outcome"},
    "chroma_throttled_requests_total": set(),
}

# Latency distributions the dashboard shows as percentiles.
EMF_PERCENTILES = {
    "chroma_read_duration_seconds": {"p50", "p99"},
    "chroma_compaction_duration_seconds": {"p50", "p99"},
}

# Made-up values of the pseudo parameters, for rendering Fn::Sub.
PSEUDO = {
    "AWS::Region": "eu-west-3",
    "AWS::StackName": "chroma-ci",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}

# How every alarm notifies: the topic when one is given, nothing otherwise.
NOTIFY = {"Fn::If": ["NotifyAlarms", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def load_template():
    # cfn-lint's loader understands the short intrinsic forms (!Ref, !Sub, !GetAtt, ...);
    # a JSON round trip leaves plain dicts and lists that the mutations can edit.
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


@pytest.fixture(scope="module")
def template():
    return load_template()


# ------------------------------------------------------------------ helpers


def resources(t, kind):
    return {k: r for k, r in t["Resources"].items() if r["Type"] == kind}


def props(resource):
    return resource.get("Properties", {})


def as_list(value):
    return value if isinstance(value, list) else [value]


def function_props(t, name):
    """A function's properties with the Globals merged in as SAM merges them: maps merged
    key by key at every depth (a function's environment variables join the global ones),
    scalars and lists overridden."""

    def merge(base, over):
        out = copy.deepcopy(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    return merge(t.get("Globals", {}).get("Function", {}), props(t["Resources"][name]))


def ref_target(value):
    """The logical id a `!Ref X` or `!GetAtt X.Attr` points at, else None."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return target[0] if isinstance(target, list) else target.split(".")[0]
    return None


def names_resource(value, logical_id):
    """Whether `value` (a Ref, GetAtt or Sub) refers to the resource `logical_id`."""
    if ref_target(value) == logical_id:
        return True
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        text = text[0] if isinstance(text, list) else text
        return re.search(r"\$\{" + re.escape(logical_id) + r"[.}]", text) is not None
    return False


def iam_policy_documents(t):
    """(where, document) for every identity policy: role inline policies, RolePolicy,
    Policy, ManagedPolicy."""
    docs = []
    for name, r in t["Resources"].items():
        p = props(r)
        if r["Type"] == "AWS::IAM::Role":
            for policy in p.get("Policies", []):
                docs.append((f"{name}/{policy.get('PolicyName')}", policy["PolicyDocument"]))
        elif r["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append((name, p["PolicyDocument"]))
        elif r["Type"] == "AWS::Serverless::Function":
            for policy in as_list(p.get("Policies", [])):
                if isinstance(policy, dict) and "Statement" in policy:
                    docs.append((f"{name}/Policies", policy))
    return docs


def all_policy_documents(t):
    """Identity policies plus resource policies (key, bucket, queues)."""
    docs = list(iam_policy_documents(t))
    for name, r in t["Resources"].items():
        p = props(r)
        if r["Type"] == "AWS::KMS::Key":
            docs.append((name, p["KeyPolicy"]))
        elif r["Type"] in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"):
            docs.append((name, p["PolicyDocument"]))
    return docs


def statements(document):
    return as_list(document["Statement"])


def actions(statement):
    return [a.lower() for a in as_list(statement.get("Action", []))]


def role_of(t, function):
    role = function_props(t, function).get("Role")
    assert role is not None, f"{function} has no Role of its own (SAM would create one)"
    target = ref_target(role)
    assert target in t["Resources"], f"{function}'s Role is not a role of this template"
    assert t["Resources"][target]["Type"] == "AWS::IAM::Role", f"{function}'s Role is not an IAM role"
    return target


def role_statements(t, role):
    """Allow statements of the identity policies attached to `role`."""
    found = []
    for name, r in t["Resources"].items():
        p = props(r)
        attached = False
        if name == role:
            for policy in p.get("Policies", []):
                found += statements(policy["PolicyDocument"])
            continue
        if r["Type"] == "AWS::IAM::RolePolicy":
            attached = ref_target(p.get("RoleName")) == role
        elif r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            attached = any(ref_target(x) == role for x in p.get("Roles", []))
        if attached:
            found += statements(p["PolicyDocument"])
    return [s for s in found if s.get("Effect") == "Allow"]


def key_statements_for(t, role):
    """Allow statements of the key policy that name `role` as a principal."""
    found = []
    for r in resources(t, "AWS::KMS::Key").values():
        for s in statements(props(r)["KeyPolicy"]):
            principal = s.get("Principal", {})
            aws = as_list(principal.get("AWS", [])) if isinstance(principal, dict) else []
            if s.get("Effect") == "Allow" and any(ref_target(p) == role for p in aws):
                found.append(s)
    return found


def routes(t):
    """(method, path, function) for every HttpApi event; ('ANY', '$default', f) without a path."""
    found = []
    for name in resources(t, "AWS::Serverless::Function"):
        for event in function_props(t, name).get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            p = event.get("Properties", {})
            found.append((p.get("Method", "ANY").upper(), p.get("Path", "$default"), name))
    return found


def render_sub(t, value):
    """The string CloudFormation makes of a Fn::Sub: `${!X}` is a literal `${X}`,
    parameters take their defaults, pseudo parameters and resources made-up values
    (distinct per resource and attribute). A name the template does not define fails,
    as the stack would."""
    if isinstance(value, dict):
        value = value["Fn::Sub"]
    text, variables = (value[0], value[1]) if isinstance(value, list) else (value, {})

    def substitute(match):
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            assert isinstance(variables[name], str), f"${{{name}}}: only literal Sub variables are rendered"
            return variables[name]
        if name in PSEUDO:
            return PSEUDO[name]
        if name in t.get("Parameters", {}):
            return str(t["Parameters"][name].get("Default", ""))
        resource, _, attribute = name.partition(".")
        assert resource in t["Resources"], f"${{{name}}} names nothing of the template (a literal needs ${{!...}})"
        stack, region, account = PSEUDO["AWS::StackName"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        if not attribute:
            return f"{stack}-{resource}-ref"
        if attribute == "Arn" and t["Resources"][resource]["Type"] == "AWS::CloudWatch::Alarm":
            return f"arn:aws:cloudwatch:{region}:{account}:alarm:{stack}-{resource}"
        return f"{stack}-{resource}-{attribute}"

    return re.sub(r"\$\{([^}]*)\}", substitute, text)


def rendered(t, value):
    """What a Ref, GetAtt or Sub renders to (as render_sub makes it up)."""
    if isinstance(value, dict) and "Ref" in value:
        return render_sub(t, "${" + value["Ref"] + "}")
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return render_sub(t, "${" + (".".join(target) if isinstance(target, list) else target) + "}")
    return render_sub(t, value)


def lambda_sum(alarm, metric):
    """The functions (logical ids) whose AWS/Lambda `metric` the alarm watches summed: one
    metric, or metric math SUM([...]) over one Sum statistic per function."""
    p = props(alarm)
    if "MetricName" in p:
        if p.get("Namespace") != "AWS/Lambda" or p["MetricName"] != metric or p.get("Statistic") != "Sum":
            return set()
        return {ref_target(d["Value"]) for d in p.get("Dimensions", []) if d["Name"] == "FunctionName"}
    queries = p.get("Metrics", [])
    returned = [q for q in queries if q.get("ReturnData", True)]
    assert len(returned) == 1, f"an alarm returns one series, not {len(returned)}"
    summed = re.fullmatch(r"\s*SUM\(\[([^\]]*)\]\)\s*", returned[0].get("Expression", ""))
    if not summed:
        return set()
    by_id = {q["Id"]: q for q in queries}
    found = set()
    for id_ in (i.strip() for i in summed.group(1).split(",")):
        assert id_ in by_id, f"SUM of {id_!r}, which the alarm does not define"
        stat = by_id[id_].get("MetricStat")
        if not stat or stat["Metric"]["Namespace"] != "AWS/Lambda" or stat["Metric"]["MetricName"] != metric or stat["Stat"] != "Sum":
            return set()
        found |= {ref_target(d["Value"]) for d in stat["Metric"].get("Dimensions", []) if d["Name"] == "FunctionName"}
    return found


def events_of(t, function, kind):
    return [e.get("Properties", {}) for e in function_props(t, function).get("Events", {}).values() if e["Type"] == kind]


def queue_of(event):
    target = ref_target(event["Queue"])
    assert target, f"event source {event['Queue']} is not a queue of this template"
    return target


# ------------------------------------------------------------------ checks


def check_functions(t):
    fns = resources(t, "AWS::Serverless::Function")
    assert set(fns) == set(FUNCTIONS), f"functions are {sorted(fns)}"
    for name, binary in FUNCTIONS.items():
        p = function_props(t, name)
        meta = t["Resources"][name].get("Metadata", {})
        assert meta.get("BuildMethod") == "rust-cargolambda", f"{name}: BuildMethod {meta.get('BuildMethod')}"
        built = meta.get("BuildProperties", {}).get("Binary")
        assert built == binary, f"{name}: builds binary {built!r}, not {binary!r}"
        assert p.get("Runtime") == "provided.al2023", f"{name}: Runtime {p.get('Runtime')}"
        assert p.get("Architectures") == ["arm64"], f"{name}: Architectures {p.get('Architectures')}"
        assert p.get("Handler") == "bootstrap", f"{name}: Handler {p.get('Handler')}"
        code = ROOT / p["CodeUri"]
        manifest = (code / "Cargo.toml").read_text()
        assert re.search(r'^name\s*=\s*"chroma-functions"', manifest, re.M), f"{code} is not chroma-functions"


def check_environment(t):
    for name in FUNCTIONS:
        env = function_props(t, name).get("Environment", {}).get("Variables", {})
        missing = [v for v in ENV if v not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["CHROMA_LOG_FORMAT"] == "json", name
        # One namespace per stack: two stacks in an account never mix their metrics.
        namespace = env["CHROMA_METRICS_NAMESPACE"]
        assert isinstance(namespace, dict) and "${AWS::StackName}" in namespace.get("Fn::Sub", ""), f"{name}: metrics namespace {namespace}"
        assert ref_target(env["CHROMA_BUCKET"]) == "DataBucket", name
        assert ref_target(env["CHROMA_KMS_KEY_ID"]) in resources(t, "AWS::KMS::Key"), name
        assert ref_target(env["CHROMA_COMPACTION_QUEUE_URL"]) == "CompactionQueue", name
        # An emulator endpoint only when asked for (sam local); absent in a deployment.
        endpoint = env.get("AWS_ENDPOINT_URL")
        if endpoint is not None:
            condition, _, otherwise = endpoint["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, f"{name}: AWS_ENDPOINT_URL is always set"
            assert t["Parameters"]["EmulatorEndpoint"]["Default"] == "", "an emulator endpoint by default"


def check_own_roles(t):
    roles = {name: role_of(t, name) for name in FUNCTIONS}
    shared = {r for r in roles.values() if list(roles.values()).count(r) > 1}
    assert not shared, f"functions share roles: {roles}"
    for name, role in roles.items():
        assert role_statements(t, role), f"{name}'s role {role} grants nothing"


def check_no_wildcard_actions(t):
    for where, doc in all_policy_documents(t):
        for s in statements(doc):
            if s.get("Effect") != "Allow":
                continue
            assert "NotAction" not in s, f"{where}: NotAction in an Allow statement"
            for a in actions(s):
                assert a != "*" and not a.endswith(":*"), f"{where}: Allow of {a!r}"


def check_data_resources_named(t):
    for where, doc in iam_policy_documents(t):
        for s in statements(doc):
            if s.get("Effect") != "Allow":
                continue
            services = {a.split(":")[0] for a in actions(s)}
            if services & set(DATA_SERVICES):
                assert "NotResource" not in s, f"{where}: NotResource on data"
                for r in as_list(s.get("Resource", [])):
                    assert r != "*", f"{where}: {sorted(services)} actions on Resource '*'"
                    if isinstance(r, str):
                        assert not re.fullmatch(r"arn:[^:]*:(s3|dynamodb|kms|sqs):[^/]*\*", r), f"{where}: {r}"


def check_query_read_only(t):
    role = role_of(t, "QueryFunction")
    granted = {a for s in role_statements(t, role) + key_statements_for(t, role) for a in actions(s)}
    assert not granted & WRITE_ACTIONS, f"query may {sorted(granted & WRITE_ACTIONS)}"
    kms = {a for s in key_statements_for(t, role) for a in actions(s)}
    assert kms == {"kms:decrypt"}, f"the key policy lets query {sorted(kms)}"


def check_key_policy(t):
    keys = resources(t, "AWS::KMS::Key")
    assert len(keys) == 1, "one customer managed key"
    (name, key), = keys.items()
    p = props(key)
    assert p.get("EnableKeyRotation") is True, "key rotation is off"
    assert key.get("DeletionPolicy") == "Retain", "the key would be deleted with the stack"
    for s in statements(p["KeyPolicy"]):
        if s.get("Effect") == "Allow":
            principal = s.get("Principal")
            assert principal != "*" and principal != {"AWS": "*"}, f"{name}: {s.get('Sid')} allows anyone"
    for fn in ("IngestFunction", "IngestEventsFunction", "CompactFunction"):
        granted = {a for s in key_statements_for(t, role_of(t, fn)) for a in actions(s)}
        assert {"kms:generatedatakey", "kms:decrypt"} <= granted, f"{fn} cannot use the key: {granted}"
    aliases = [props(a) for a in resources(t, "AWS::KMS::Alias").values()]
    assert any(a["AliasName"] == {"Fn::Sub": "alias/${AWS::StackName}-data"} for a in aliases), aliases


def bucket(t):
    buckets = resources(t, "AWS::S3::Bucket")
    assert list(buckets) == ["DataBucket"], f"buckets: {sorted(buckets)}"
    return buckets["DataBucket"]


def check_bucket_settings(t):
    b = bucket(t)
    p = props(b)
    block = p.get("PublicAccessBlockConfiguration", {})
    for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert block.get(setting) is True, f"public access: {setting} is not true"
    assert p.get("VersioningConfiguration", {}).get("Status") == "Enabled", "versioning is off"
    rules = p.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    assert rules, "no default encryption"
    for rule in rules:
        default = rule["ServerSideEncryptionByDefault"]
        assert default["SSEAlgorithm"] == "aws:kms", default
        assert ref_target(default.get("KMSMasterKeyID")) in resources(t, "AWS::KMS::Key"), default
        assert rule.get("BucketKeyEnabled") is True, "bucket key is off"
    owner = [r["ObjectOwnership"] for r in p.get("OwnershipControls", {}).get("Rules", [])]
    assert owner == ["BucketOwnerEnforced"], f"object ownership {owner}"
    assert b.get("DeletionPolicy") == "Retain", "the data bucket would be deleted with the stack"


def check_bucket_lifecycle(t):
    rules = props(bucket(t)).get("LifecycleConfiguration", {}).get("Rules", [])
    enabled = [r for r in rules if r.get("Status") == "Enabled"]
    assert any(r.get("Prefix") == "ingest-failed/" and "ExpirationInDays" in r for r in enabled), "rejected files never expire"
    assert any("NoncurrentVersionExpiration" in r for r in enabled), "old versions never expire"
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in enabled), "multipart uploads linger"


def bucket_policy_statements(t):
    policies = [props(p) for p in resources(t, "AWS::S3::BucketPolicy").values()]
    policies = [p for p in policies if ref_target(p["Bucket"]) == "DataBucket"]
    assert policies, "the data bucket has no policy"
    return [s for p in policies for s in statements(p["PolicyDocument"])]


def denies(s, action):
    return s.get("Effect") == "Deny" and s.get("Principal") in ("*", {"AWS": "*"}) and any(
        a in (action.lower(), "s3:*", "*") for a in actions(s)
    )


def covers_objects(s):
    return any(names_resource(r, "DataBucket") and "/*" in json.dumps(r) for r in as_list(s.get("Resource", [])))


def check_bucket_denies_insecure_transport(t):
    ok = [
        s
        for s in bucket_policy_statements(t)
        if denies(s, "s3:*")
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
        and covers_objects(s)
        and any(ref_target(r) == "DataBucket" for r in as_list(s.get("Resource", [])))
    ]
    assert ok, "no Deny of s3:* on the bucket and its objects when aws:SecureTransport is false"


def check_bucket_requires_kms_on_put(t):
    ok = [
        s
        for s in bucket_policy_statements(t)
        if denies(s, "s3:PutObject")
        and s.get("Condition", {}).get("StringNotEquals", {}).get("s3:x-amz-server-side-encryption") == "aws:kms"
        and covers_objects(s)
    ]
    assert ok, "no Deny of s3:PutObject without x-amz-server-side-encryption: aws:kms"
    key = [
        s
        for s in bucket_policy_statements(t)
        if denies(s, "s3:PutObject")
        and "s3:x-amz-server-side-encryption-aws-kms-key-id" in s.get("Condition", {}).get("StringNotEqualsIfExists", {})
    ]
    assert key, "no Deny of s3:PutObject naming another KMS key"


def check_tables(t):
    tables = resources(t, "AWS::DynamoDB::Table")
    by_suffix = {}
    for name, table in tables.items():
        p = props(table)
        assert p.get("BillingMode") == "PAY_PER_REQUEST", name
        assert p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True, f"{name}: no PITR"
        sse = p.get("SSESpecification", {})
        assert sse.get("SSEEnabled") is True and sse.get("SSEType") == "KMS", f"{name}: not KMS-encrypted"
        assert ref_target(sse.get("KMSMasterKeyId")) in resources(t, "AWS::KMS::Key"), f"{name}: not the stack's key"
        assert table.get("DeletionPolicy") == "Retain", f"{name} would be deleted with the stack"
        suffix = p["TableName"]["Fn::Sub"].removeprefix("${AWS::StackName}-")
        keys = [(k["AttributeName"], k["KeyType"]) for k in p["KeySchema"]]
        types = {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]}
        assert set(types) == {k for k, _ in keys} and set(types.values()) == {"S"}, f"{name}: {types}"
        by_suffix[suffix] = keys
    assert by_suffix == TABLE_KEYS, f"tables {by_suffix}"


def check_http_api(t):
    apis = resources(t, "AWS::Serverless::HttpApi")
    assert len(apis) == 1, "one HTTP API"
    p = props(next(iter(apis.values())))
    assert "Auth" not in p, "the functions authenticate callers; no API Gateway authorizer"
    throttle = p.get("DefaultRouteSettings", {})
    assert "ThrottlingBurstLimit" in throttle and "ThrottlingRateLimit" in throttle, "no throttling"
    logs = p.get("AccessLogSettings", {})
    target = ref_target(logs.get("DestinationArn"))
    assert target in resources(t, "AWS::Logs::LogGroup"), "no access log group"
    assert "RetentionInDays" in props(t["Resources"][target]), "access logs kept forever"
    fmt = logs.get("Format", "")
    fields = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", fmt))
    for field in ("requestId", "ip", "routeKey", "status", "latency"):
        assert field in fields, f"access log lacks {field}"
    assert "header" not in fmt.lower() and "authorization" not in fmt.lower(), "access logs must not hold credentials"


def router_routes():
    """(method, path) -> access for every route of the router (API_ROUTES)."""
    return {(r["method"], r["path"]): r["access"] for r in json.loads(API_ROUTES.read_text())["routes"]}


def check_routes(t):
    served = router_routes()
    assert len(served) > 40, f"{API_ROUTES.name} lists {len(served)} routes"
    table = routes(t)
    assert table, "no routes"
    seen = set()
    for method, path, fn in table:
        assert (method, path) not in seen, f"{method} {path} routed twice"
        seen.add((method, path))
        read = method == "GET" or (method == "POST" and path.endswith(READ_POSTS))
        if path.startswith("/api/v2/admin/"):
            read = False
        expected = "QueryFunction" if read and path != "$default" else "IngestFunction"
        assert fn == expected, f"{method} {path} goes to {fn}, not {expected}"
        if path == "$default":
            continue
        # The same path syntax as the router's ({param}), the same method.
        access = served.get((method, path))
        assert access is not None, f"{method} {path}: the router serves no such route ({API_ROUTES.name})"
        assert (access == "read") == read, f"{method} {path}: the router says {access}"
    # Writes and administration reach the ingest function, explicitly or through $default.
    assert ("ANY", "$default") in seen, "no $default route"
    for (method, path), access in served.items():
        if (method, path) not in seen and access == "read":
            assert (method, path) in DEFAULT_READS, (
                f"the read route {method} {path} falls through to $default (the ingest function): "
                "route it to QueryFunction, or list it in DEFAULT_READS if that is intended"
            )
    for route in DEFAULT_READS:
        assert served.get(route) == "read" and route not in seen, f"DEFAULT_READS: {route} is not a read route left to $default"
    for must in [("GET", "/api/v2/heartbeat"), ("POST", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query"), ("ANY", "$default")]:
        assert must in seen, f"no route {must}"


def check_ingest_events_source(t):
    sources = events_of(t, "IngestEventsFunction", "SQS")
    assert len(sources) == 1, "ingest-events has one SQS source"
    source = sources[0]
    assert source.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], "a bad file would redeliver the whole batch"
    queue = props(t["Resources"][queue_of(source)])
    assert queue.get("RedrivePolicy", {}).get("maxReceiveCount") == 5, "no dead-letter queue"
    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue, "queue not encrypted"
    config = props(bucket(t))["NotificationConfiguration"]["QueueConfigurations"]
    assert any(
        ref_target(c["Queue"]) == queue_of(source)
        and c["Event"] == "s3:ObjectCreated:*"
        and {"Name": "prefix", "Value": "ingest/"} in c["Filter"]["S3Key"]["Rules"]
        for c in config
    ), "the bucket does not notify the queue of new ingest/ objects"


def check_compaction_queue(t):
    queue = props(t["Resources"]["CompactionQueue"])
    assert queue.get("FifoQueue") is True, "compaction queue is not FIFO"
    assert queue["QueueName"]["Fn::Sub"].endswith(".fifo"), queue["QueueName"]
    assert queue.get("ContentBasedDeduplication") is False, "messages carry their own deduplication ids"
    dlq = props(t["Resources"][ref_target(queue["RedrivePolicy"]["deadLetterTargetArn"])])
    assert dlq.get("FifoQueue") is True, "a FIFO queue needs a FIFO dead-letter queue"
    sources = events_of(t, "CompactFunction", "SQS")
    assert [queue_of(s) for s in sources] == ["CompactionQueue"], "compact does not consume the compaction queue"
    schedules = events_of(t, "CompactFunction", "Schedule")
    assert schedules and all(s.get("Enabled", True) for s in schedules), "no scheduled sweep"


def check_visibility_timeouts(t):
    for fn in FUNCTIONS:
        timeout = function_props(t, fn)["Timeout"]
        for source in events_of(t, fn, "SQS"):
            visibility = props(t["Resources"][queue_of(source)]).get("VisibilityTimeout", 30)
            assert visibility >= 6 * timeout, f"{fn}: visibility {visibility} < 6 x timeout {timeout}"


def check_dead_letters_alarm(t):
    dlqs = {
        ref_target(props(q)["RedrivePolicy"]["deadLetterTargetArn"])
        for q in resources(t, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in props(q)
    }
    assert dlqs, "no dead-letter queues"
    alarms = [props(a) for a in resources(t, "AWS::CloudWatch::Alarm").values()]
    for dlq in dlqs:
        assert any(
            a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and any(ref_target(d["Value"]) == dlq for d in a.get("Dimensions", []))
            and a.get("ComparisonOperator") == "GreaterThanThreshold"
            and a.get("Threshold") == 0
            for a in alarms
        ), f"nothing alarms when {dlq} holds a message"
    assert any("CompactFunction" in lambda_sum(a, "Errors") for a in resources(t, "AWS::CloudWatch::Alarm").values()), "a failed sweep raises no alarm"


def check_alarm_actions(t):
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    assert alarms, "no alarms"
    assert t["Conditions"]["NotifyAlarms"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    for name, alarm in alarms.items():
        p = props(alarm)
        for key in ("AlarmActions", "OKActions"):
            assert p.get(key) == NOTIFY, f"{name}: {key} is {p.get(key)}, not the topic when given"
        assert p.get("TreatMissingData") == "notBreaching", f"{name}: an idle stack would alarm"


def check_function_alarms(t):
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    for metric in ("Errors", "Throttles"):
        found = [
            name
            for name, a in alarms.items()
            if lambda_sum(a, metric) == set(FUNCTIONS)
            and props(a).get("ComparisonOperator") == "GreaterThanOrEqualToThreshold"
            and props(a).get("Threshold") == 1
            and props(a).get("EvaluationPeriods") == 1
            and all(q.get("MetricStat", {}).get("Period", 300) == 300 for q in props(a).get("Metrics", []))
        ]
        assert found, f"no alarm on one {metric} of any of {sorted(FUNCTIONS)} in 5 minutes"


def check_compaction_lag_alarm(t):
    parameter = t["Parameters"]["CompactionLagAlarmSeconds"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 900, 60), parameter
    found = [
        name
        for name, a in resources(t, "AWS::CloudWatch::Alarm").items()
        if props(a).get("Namespace") == "AWS/SQS"
        and props(a).get("MetricName") == "ApproximateAgeOfOldestMessage"
        and [ref_target(d["Value"]) for d in props(a).get("Dimensions", [])] == ["CompactionQueue"]
        and props(a).get("Statistic") == "Maximum"
        and props(a).get("Period") == 300
        and props(a).get("EvaluationPeriods") == 3
        and props(a).get("DatapointsToAlarm", 3) == 3
        and props(a).get("Threshold") == {"Ref": "CompactionLagAlarmSeconds"}
        and props(a).get("ComparisonOperator") == "GreaterThanThreshold"
    ]
    assert found, "nothing alarms when compaction requests wait past CompactionLagAlarmSeconds for 3 periods of 5 minutes"


def dashboard_body(t):
    boards = resources(t, "AWS::CloudWatch::Dashboard")
    assert list(boards) == ["Dashboard"], f"dashboards: {sorted(boards)}"
    p = props(boards["Dashboard"])
    assert p.get("DashboardName") == {"Fn::Sub": "${AWS::StackName}"}, "the dashboard is named after the stack"
    text = render_sub(t, p["DashboardBody"])
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = text.splitlines()[error.lineno - 1] if error.lineno <= len(text.splitlines()) else ""
        raise AssertionError(f"the dashboard body is not JSON once rendered: {error}\n{line}") from None


SEARCH = re.compile(r"""SEARCH\('\{("?)([^",}]+)\1((?:,[A-Za-z_]+)*)\} MetricName="([^"]+)"', '([^']+)', 300\)""")


def check_dashboard(t):
    body = dashboard_body(t)
    widgets = body["widgets"]
    metrics, searches, alarms_shown = set(), [], set()
    for w in widgets:
        assert w["type"] in ("metric", "alarm", "text"), f"widget type {w['type']}"
        p = w["properties"]
        if w["type"] == "alarm":
            alarms_shown |= set(p["alarms"])
        if w["type"] != "metric":
            continue
        assert p.get("region") == PSEUDO["AWS::Region"], f"{p.get('title')}: region {p.get('region')}"
        assert p.get("period") == 300, f"{p.get('title')}: period {p.get('period')}"
        assert p.get("metrics"), f"{p.get('title')}: no metrics"
        for row in p["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            if "expression" in options:
                searches.append((p.get("title"), options["expression"]))
                continue
            names = row[:-1] if options else row
            namespace, metric, *dims = names
            stat = options.get("stat", p.get("stat"))
            metrics.add((namespace, metric, tuple(dims), stat))

    for fn in FUNCTIONS:
        dims = ("FunctionName", rendered(t, {"Ref": fn}))
        for metric, stat in [("Invocations", "Sum"), ("Errors", "Sum"), ("Throttles", "Sum"), ("Duration", "p50"), ("Duration", "p99")]:
            assert ("AWS/Lambda", metric, dims, stat) in metrics, f"the dashboard lacks {metric} ({stat}) of {fn}"
    queues = resources(t, "AWS::SQS::Queue")
    dlqs = {ref_target(props(q)["RedrivePolicy"]["deadLetterTargetArn"]) for q in queues.values() if "RedrivePolicy" in props(q)}
    assert dlqs == {"IngestDeadLetterQueue", "CompactionDeadLetterQueue"}, dlqs
    for queue in queues:
        dims = ("QueueName", rendered(t, {"Fn::GetAtt": [queue, "QueueName"]}))
        shown = {"ApproximateNumberOfMessagesVisible"} if queue in dlqs else {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}
        for metric in shown:
            assert ("AWS/SQS", metric, dims, "Maximum") in metrics, f"the dashboard lacks {metric} of {queue}"

    namespaces = {render_sub(t, function_props(t, fn)["Environment"]["Variables"]["CHROMA_METRICS_NAMESPACE"]) for fn in FUNCTIONS}
    assert len(namespaces) == 1, f"the functions emit to {namespaces}"
    (namespace,) = namespaces
    searched = {}
    for title, expression in searches:
        match = SEARCH.fullmatch(expression)
        assert match, f"{title}: {expression!r} is not SEARCH('{{namespace,dimensions}} MetricName=\"...\"', 'stat', 300)"
        _, ns, dims, metric, stat = match.groups()
        assert ns == namespace, f"{title}: searches {ns!r}, the functions emit to {namespace!r}"
        assert metric in EMF_METRICS, f"{title}: no function emits {metric}"
        expected = {"function"} | EMF_METRICS[metric]
        named = set(dims.strip(",").split(","))
        assert named == expected, f"{title}: {metric} has the dimensions {sorted(expected)}, not {sorted(named)}"
        searched.setdefault(metric, set()).add(stat)
    missing = set(EMF_METRICS) - set(searched)
    assert not missing, f"the dashboard shows none of {sorted(missing)}"
    for metric, stats in EMF_PERCENTILES.items():
        assert stats <= searched[metric], f"the dashboard lacks {sorted(stats - searched[metric])} of {metric}"

    every_alarm = {rendered(t, {"Fn::GetAtt": [a, "Arn"]}) for a in resources(t, "AWS::CloudWatch::Alarm")}
    assert alarms_shown == every_alarm, f"the alarm widget lacks {sorted(every_alarm - alarms_shown)}"


def check_outputs(t):
    outputs = t.get("Outputs", {})
    for name in ("ApiEndpoint", "DataBucketName", "TablePrefix", "KmsKeyArn", "IngestQueueUrl", "CompactionQueueUrl", "ChromaEnv", "DashboardUrl"):
        assert name in outputs, f"no output {name}"
    env = outputs["ChromaEnv"]["Value"]["Fn::Sub"]
    for var in ("CHROMA_BUCKET=", "CHROMA_TABLE_PREFIX=", "CHROMA_KMS_KEY_ID=", "AWS_REGION="):
        assert var in env, f"ChromaEnv lacks {var}"
    assert outputs["ApiEndpoint"]["Value"]["Fn::Sub"].startswith("https://"), "the endpoint is not https"
    assert names_resource(outputs["DashboardUrl"]["Value"], "Dashboard"), "DashboardUrl does not name the dashboard"


def check_function_url(t):
    urls = resources(t, "AWS::Lambda::Url")
    assert len(urls) == 1, "one Function URL option"
    url = t["Resources"][next(iter(urls))]
    assert url.get("Condition") == "UseFunctionUrl", "the Function URL exists only when asked for"
    p = props(url)
    assert ref_target(p["TargetFunctionArn"]) == "IngestFunction", "the URL serves every route: the ingest function"
    assert p["AuthType"] == {"Ref": "FunctionUrlAuthType"}, "the URL's auth type is the parameter's"
    assert "NONE" in t["Parameters"]["FunctionUrlAuthType"]["AllowedValues"]
    assert t["Parameters"]["FunctionUrlAuthType"]["Default"] == "", "no URL unless asked for"
    for name, perm in resources(t, "AWS::Lambda::Permission").items():
        if props(perm).get("Principal") == "*":
            assert perm.get("Condition") == "PublicFunctionUrl", f"{name}: public invoke outside the NONE option"
            assert ref_target(props(perm)["FunctionName"]) == "IngestFunction", name
    assert t["Outputs"]["FunctionUrl"].get("Condition") == "UseFunctionUrl"
    # Behind the URL the ingest function answers queries too: the query function's memory
    # and caches.
    ingest = function_props(t, "IngestFunction")
    assert ingest["MemorySize"] == {"Fn::If": ["UseFunctionUrl", {"Ref": "QueryMemorySize"}, 1769]}, \
        "behind the URL the ingest function is sized as the query function"
    assert ingest["Environment"]["Variables"].get("CHROMA_SERVES_READS") == {"Fn::If": ["UseFunctionUrl", "true", "false"]}, \
        "behind the URL the ingest function caches as the query function"
    assert function_props(t, "QueryFunction")["MemorySize"] == {"Ref": "QueryMemorySize"}
    # /tmp holds the cache of S3 reads a warm re-rank reads vectors from: sized by a
    # parameter whose default fits a 1M x 768 collection's index objects (3.7 GB).
    assert function_props(t, "QueryFunction")["EphemeralStorage"] == {"Size": {"Ref": "QueryEphemeralStorage"}}
    assert ingest["EphemeralStorage"] == {"Size": {"Fn::If": ["UseFunctionUrl", {"Ref": "QueryEphemeralStorage"}, 512]}}
    assert t["Parameters"]["QueryEphemeralStorage"]["Default"] * 0.9 >= 3.7 * 1024


CHECKS = [
    check_functions,
    check_environment,
    check_own_roles,
    check_no_wildcard_actions,
    check_data_resources_named,
    check_query_read_only,
    check_key_policy,
    check_bucket_settings,
    check_bucket_lifecycle,
    check_bucket_denies_insecure_transport,
    check_bucket_requires_kms_on_put,
    check_tables,
    check_http_api,
    check_routes,
    check_ingest_events_source,
    check_compaction_queue,
    check_visibility_timeouts,
    check_dead_letters_alarm,
    check_alarm_actions,
    check_function_alarms,
    check_compaction_lag_alarm,
    check_dashboard,
    check_outputs,
    check_function_url,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_template(template, check):
    check(template)


# ------------------------------------------------------------------ each check can fail


def statement(t, resource, sid, document="PolicyDocument"):
    for s in statements(props(t["Resources"][resource])[document]):
        if s.get("Sid") == sid:
            return s
    raise KeyError(f"{resource} has no statement {sid}")


def drop(mapping, key):
    del mapping[key]


def share_role(t):
    t["Resources"]["IngestFunction"]["Properties"]["Role"] = {"Fn::GetAtt": ["QueryRole", "Arn"]}


def add_statement(resource, statement_):
    def mutate(t):
        props(t["Resources"][resource])["PolicyDocument"]["Statement"].append(statement_)

    return mutate


def route_get_to_ingest(t):
    events = t["Resources"]["QueryFunction"]["Properties"]["Events"]
    t["Resources"]["IngestFunction"]["Properties"]["Events"]["Moved"] = events.pop("QueryRecords")


def route_write_to_query(t):
    events = t["Resources"]["IngestFunction"]["Properties"]["Events"]
    t["Resources"]["QueryFunction"]["Properties"]["Events"]["Moved"] = events.pop("AddRecords")


def add_route(function, method, path):
    def mutate(t):
        events = t["Resources"][function]["Properties"]["Events"]
        events["Extra"] = {"Type": "HttpApi", "Properties": {"ApiId": {"Ref": "HttpApi"}, "Method": method, "Path": path}}

    return mutate


def route_path(event, path):
    def mutate(t):
        t["Resources"]["QueryFunction"]["Properties"]["Events"][event]["Properties"]["Path"] = path

    return mutate


def bigger_timeout(t):
    t["Resources"]["IngestEventsFunction"]["Properties"]["Timeout"] = 900


def extra_table_key(t):
    p = props(t["Resources"]["ManifestsTable"])
    p["AttributeDefinitions"].append({"AttributeName": "version", "AttributeType": "N"})
    p["KeySchema"].append({"AttributeName": "version", "KeyType": "RANGE"})


def log_header(t):
    settings = props(t["Resources"]["HttpApi"])["AccessLogSettings"]
    settings["Format"] = settings["Format"][:-1] + ',"auth":"$context.request.header.authorization"}'


def edit_dashboard(old, new):
    def mutate(t):
        body = props(t["Resources"]["Dashboard"])["DashboardBody"]
        assert old in body["Fn::Sub"], f"the dashboard body has no {old!r}"
        body["Fn::Sub"] = body["Fn::Sub"].replace(old, new)

    return mutate


def alarm_query(t, alarm, id_):
    return next(q for q in props(t["Resources"][alarm])["Metrics"] if q["Id"] == id_)


MUTATIONS = [
    (check_functions, lambda t: t["Globals"]["Function"].update(Architectures=["x86_64"])),
    (check_functions, lambda t: t["Resources"]["CompactFunction"]["Metadata"]["BuildProperties"].update(Binary="chroma")),
    (check_environment, lambda t: drop(t["Globals"]["Function"]["Environment"]["Variables"], "CHROMA_KMS_KEY_ID")),
    (check_environment, lambda t: drop(t["Globals"]["Function"]["Environment"]["Variables"], "CHROMA_METRICS_NAMESPACE")),
    (check_environment, lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(CHROMA_METRICS_NAMESPACE="Chroma")),
    (check_environment, lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(AWS_ENDPOINT_URL={"Fn::If": ["UseEmulator", {"Ref": "EmulatorEndpoint"}, "http://127.0.0.1:4566"]})),
    (check_own_roles, share_role),
    (check_own_roles, lambda t: drop(t["Resources"]["CompactFunction"]["Properties"], "Role")),
    (check_no_wildcard_actions, add_statement("IngestPermissions", {"Effect": "Allow", "Action": "s3:*", "Resource": {"Fn::GetAtt": ["DataBucket", "Arn"]}})),
    (check_no_wildcard_actions, add_statement("CompactPermissions", {"Effect": "Allow", "Action": "*", "Resource": {"Fn::GetAtt": ["DataBucket", "Arn"]}})),
    (check_no_wildcard_actions, lambda t: statement(t, "DataKey", "KeyAdministration", "KeyPolicy").update(Action="kms:*")),
    (check_data_resources_named, add_statement("QueryPermissions", {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"})),
    (check_data_resources_named, lambda t: statement(t, "IngestPermissions", "RequestCompaction").update(Resource="*")),
    (check_query_read_only, lambda t: statement(t, "QueryPermissions", "ReadObjects").update(Action=["s3:GetObject", "s3:PutObject"])),
    (check_query_read_only, lambda t: statement(t, "DataKey", "QueryUnwrapsDataKeys", "KeyPolicy").update(Action=["kms:Decrypt", "kms:GenerateDataKey"])),
    (check_key_policy, lambda t: props(t["Resources"]["DataKey"]).update(EnableKeyRotation=False)),
    (check_key_policy, lambda t: statement(t, "DataKey", "QueryUnwrapsDataKeys", "KeyPolicy").update(Principal={"AWS": "*"})),
    (check_bucket_settings, lambda t: props(t["Resources"]["DataBucket"])["PublicAccessBlockConfiguration"].update(RestrictPublicBuckets=False)),
    (check_bucket_settings, lambda t: props(t["Resources"]["DataBucket"]).update(VersioningConfiguration={"Status": "Suspended"})),
    (check_bucket_settings, lambda t: props(t["Resources"]["DataBucket"])["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"].update(SSEAlgorithm="AES256")),
    (check_bucket_lifecycle, lambda t: props(t["Resources"]["DataBucket"])["LifecycleConfiguration"]["Rules"].pop(0)),
    (check_bucket_denies_insecure_transport, lambda t: statement(t, "DataBucketPolicy", "DenyInsecureTransport").update(Effect="Allow")),
    (check_bucket_denies_insecure_transport, lambda t: statement(t, "DataBucketPolicy", "DenyInsecureTransport").update(Condition={})),
    (check_bucket_requires_kms_on_put, lambda t: statement(t, "DataBucketPolicy", "DenyPutWithoutKmsEncryption")["Condition"].update(StringNotEquals={"s3:x-amz-server-side-encryption": "AES256"})),
    (check_bucket_requires_kms_on_put, lambda t: statement(t, "DataBucketPolicy", "DenyPutWithAnotherKmsKey").update(Action="s3:GetObject")),
    (check_tables, lambda t: drop(props(t["Resources"]["ApiKeysTable"]), "PointInTimeRecoverySpecification")),
    (check_tables, lambda t: props(t["Resources"]["CatalogTable"])["SSESpecification"].update(SSEEnabled=False)),
    (check_tables, extra_table_key),
    (check_http_api, lambda t: drop(props(t["Resources"]["HttpApi"]), "DefaultRouteSettings")),
    (check_http_api, lambda t: drop(props(t["Resources"]["HttpApi"]), "AccessLogSettings")),
    (check_http_api, log_header),
    (check_routes, route_get_to_ingest),
    # A route the router does not serve, and one in another parameter syntax.
    (check_routes, add_route("IngestFunction", "POST", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/truncate")),
    (check_routes, route_path("CountRecords", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/count")),
    (check_routes, add_route("QueryFunction", "GET", "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/records")),
    # A read left to $default, a write sent to the read-only function.
    (check_routes, lambda t: drop(t["Resources"]["QueryFunction"]["Properties"]["Events"], "CountRecords")),
    (check_routes, route_write_to_query),
    (check_routes, lambda t: drop(t["Resources"]["IngestFunction"]["Properties"]["Events"], "CatchAll")),
    (check_ingest_events_source, lambda t: drop(t["Resources"]["IngestEventsFunction"]["Properties"]["Events"]["BulkFiles"]["Properties"], "FunctionResponseTypes")),
    (check_ingest_events_source, lambda t: props(t["Resources"]["DataBucket"])["NotificationConfiguration"]["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"][0].update(Value="other/")),
    (check_compaction_queue, lambda t: drop(props(t["Resources"]["CompactionQueue"]), "FifoQueue")),
    (check_compaction_queue, lambda t: drop(t["Resources"]["CompactFunction"]["Properties"]["Events"], "Sweep")),
    (check_visibility_timeouts, bigger_timeout),
    (check_dead_letters_alarm, lambda t: drop(t["Resources"], "IngestDeadLetterAlarm")),
    (check_dead_letters_alarm, lambda t: props(t["Resources"]["CompactionDeadLetterAlarm"]).update(Threshold=5)),
    (check_dead_letters_alarm, lambda t: drop(t["Resources"], "FunctionErrorsAlarm")),
    (check_dead_letters_alarm, lambda t: alarm_query(t, "FunctionErrorsAlarm", "errors").update(Expression="SUM([query_errors, ingest_errors, ingest_events_errors])")),
    (check_alarm_actions, lambda t: drop(props(t["Resources"]["FunctionThrottlesAlarm"]), "OKActions")),
    (check_alarm_actions, lambda t: props(t["Resources"]["IngestDeadLetterAlarm"]).update(AlarmActions=[{"Ref": "AlarmTopicArn"}])),
    (check_alarm_actions, lambda t: props(t["Resources"]["CompactionLagAlarm"]).update(TreatMissingData="breaching")),
    (check_function_alarms, lambda t: alarm_query(t, "FunctionThrottlesAlarm", "throttles").update(Expression="SUM([query_throttles, ingest_throttles, compact_throttles])")),
    (check_function_alarms, lambda t: alarm_query(t, "FunctionErrorsAlarm", "compact_errors")["MetricStat"]["Metric"].update(MetricName="Invocations")),
    (check_function_alarms, lambda t: props(t["Resources"]["FunctionThrottlesAlarm"]).update(Threshold=10)),
    (check_compaction_lag_alarm, lambda t: props(t["Resources"]["CompactionLagAlarm"]).update(Threshold=900)),
    (check_compaction_lag_alarm, lambda t: props(t["Resources"]["CompactionLagAlarm"]).update(EvaluationPeriods=1, DatapointsToAlarm=1)),
    (check_compaction_lag_alarm, lambda t: props(t["Resources"]["CompactionLagAlarm"])["Dimensions"][0].update(Value={"Fn::GetAtt": ["IngestQueue", "QueueName"]})),
    # Quotes inside the JSON strings must stay escaped.
    (check_dashboard, edit_dashboard('MetricName=\\"chroma_read_duration_seconds\\"', 'MetricName="chroma_read_duration_seconds"')),
    (check_dashboard, edit_dashboard('"widgets": [', '"widgets": [,')),
    # A dynamic label unescaped: CloudFormation takes ${PROP(...)} for a variable.
    (check_dashboard, edit_dashboard("${!PROP('Dim.op')}", "${PROP('Dim.op')}")),
    (check_dashboard, edit_dashboard("${CompactionDeadLetterQueue.QueueName}", "${CompactionQueue.QueueName}")),
    (check_dashboard, edit_dashboard('"${IngestEventsFunction}"', '"${IngestFunction}"')),
    (check_dashboard, edit_dashboard("Chroma/${AWS::StackName}", "Chroma")),
    (check_dashboard, lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(CHROMA_METRICS_NAMESPACE={"Fn::Sub": "Chroma/${AWS::StackName}/v2"})),
    (check_dashboard, edit_dashboard(',function,op} MetricName=\\"chroma_read_rows_total', ',function} MetricName=\\"chroma_read_rows_total')),
    (check_dashboard, edit_dashboard('"${CompactionLagAlarm.Arn}",', "")),
    (check_dashboard, edit_dashboard("'p99', 300)", "'p99', 60)")),
    (check_outputs, lambda t: drop(t["Outputs"], "ChromaEnv")),
    (check_outputs, lambda t: drop(t["Outputs"], "DashboardUrl")),
    (check_function_url, lambda t: drop(t["Resources"]["ApiFunctionUrl"], "Condition")),
    (check_function_url, lambda t: props(t["Resources"]["IngestFunction"]).update(MemorySize=1769)),
    (check_function_url, lambda t: props(t["Resources"]["IngestFunction"])["Environment"]["Variables"].pop("CHROMA_SERVES_READS")),
    (check_function_url, lambda t: props(t["Resources"]["ApiFunctionUrl"]).update(TargetFunctionArn={"Fn::GetAtt": ["QueryFunction", "Arn"]})),
    (check_function_url, lambda t: drop(t["Resources"]["ApiFunctionUrlInvokeFunction"], "Condition")),
]


@pytest.mark.parametrize(
    "check,mutate",
    MUTATIONS,
    ids=[f"{c.__name__.removeprefix('check_')}-{i}" for i, (c, _) in enumerate(MUTATIONS)],
)
def test_check_catches(template, check, mutate):
    broken = copy.deepcopy(template)
    mutate(broken)
    assert broken != template, "the mutation changed nothing"
    with pytest.raises(AssertionError):
        check(broken)


def test_every_check_is_exercised_by_a_mutation():
    assert {c for c, _ in MUTATIONS} == set(CHECKS)
