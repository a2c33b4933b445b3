"""Security and wiring properties of template.yaml (the SAM deployment).

Every property is one `check_*` function over the parsed template. `test_*` runs it on
the real template; `test_check_catches` runs it on a copy with the property broken
and expects it to fail, so no check here can pass by accident.

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

ENV = [
    "CHROMA_BUCKET",
    "CHROMA_PREFIX",
    "CHROMA_TABLE_PREFIX",
    "CHROMA_KMS_KEY_ID",
    "CHROMA_COMPACTION_QUEUE_URL",
    "CHROMA_LOG_FORMAT",
    "CHROMA_RATE_LIMIT",
    "CHROMA_KNN_INDEX",
    "CHROMA_JWT_ISSUER",
    "CHROMA_JWT_AUDIENCE",
    "CHROMA_JWT_JWKS_URL",
]


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
    """A function's properties with the Globals merged in (maps merged, scalars overridden)."""
    merged = copy.deepcopy(t.get("Globals", {}).get("Function", {}))
    for key, value in props(t["Resources"][name]).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


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


def check_routes(t):
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
    assert any(
        a.get("MetricName") == "Errors"
        and any(d["Value"] == {"Ref": "CompactFunction"} for d in a.get("Dimensions", []))
        for a in alarms
    ), "a failed sweep raises no alarm"


def check_outputs(t):
    outputs = t.get("Outputs", {})
    for name in ("ApiEndpoint", "DataBucketName", "TablePrefix", "KmsKeyArn", "IngestQueueUrl", "CompactionQueueUrl", "ChromaEnv"):
        assert name in outputs, f"no output {name}"
    env = outputs["ChromaEnv"]["Value"]["Fn::Sub"]
    for var in ("CHROMA_BUCKET=", "CHROMA_TABLE_PREFIX=", "CHROMA_KMS_KEY_ID=", "AWS_REGION="):
        assert var in env, f"ChromaEnv lacks {var}"
    assert outputs["ApiEndpoint"]["Value"]["Fn::Sub"].startswith("https://"), "the endpoint is not https"


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


def bigger_timeout(t):
    t["Resources"]["IngestEventsFunction"]["Properties"]["Timeout"] = 900


def extra_table_key(t):
    p = props(t["Resources"]["ManifestsTable"])
    p["AttributeDefinitions"].append({"AttributeName": "version", "AttributeType": "N"})
    p["KeySchema"].append({"AttributeName": "version", "KeyType": "RANGE"})


def log_header(t):
    settings = props(t["Resources"]["HttpApi"])["AccessLogSettings"]
    settings["Format"] = settings["Format"][:-1] + ',"auth":"$context.request.header.authorization"}'


MUTATIONS = [
    (check_functions, lambda t: t["Globals"]["Function"].update(Architectures=["x86_64"])),
    (check_functions, lambda t: t["Resources"]["CompactFunction"]["Metadata"]["BuildProperties"].update(Binary="chroma")),
    (check_environment, lambda t: drop(t["Globals"]["Function"]["Environment"]["Variables"], "CHROMA_KMS_KEY_ID")),
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
    (check_ingest_events_source, lambda t: drop(t["Resources"]["IngestEventsFunction"]["Properties"]["Events"]["BulkFiles"]["Properties"], "FunctionResponseTypes")),
    (check_ingest_events_source, lambda t: props(t["Resources"]["DataBucket"])["NotificationConfiguration"]["QueueConfigurations"][0]["Filter"]["S3Key"]["Rules"][0].update(Value="other/")),
    (check_compaction_queue, lambda t: drop(props(t["Resources"]["CompactionQueue"]), "FifoQueue")),
    (check_compaction_queue, lambda t: drop(t["Resources"]["CompactFunction"]["Properties"]["Events"], "Sweep")),
    (check_visibility_timeouts, bigger_timeout),
    (check_dead_letters_alarm, lambda t: drop(t["Resources"], "IngestDeadLetterAlarm")),
    (check_dead_letters_alarm, lambda t: props(t["Resources"]["CompactionDeadLetterAlarm"]).update(Threshold=5)),
    (check_dead_letters_alarm, lambda t: drop(t["Resources"], "CompactErrorsAlarm")),
    (check_outputs, lambda t: drop(t["Outputs"], "ChromaEnv")),
    (check_function_url, lambda t: drop(t["Resources"]["ApiFunctionUrl"], "Condition")),
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
