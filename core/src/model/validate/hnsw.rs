//! HNSW settings of a collection: from `configuration.hnsw` and legacy `hnsw:*` metadata.

use super::*;

fn hnsw_err(detail: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Invalid HNSW parameters: {detail}"))
}

/// A setting's problem, without the prefix of where it was found.
type Detail = std::result::Result<(), String>;

fn parse_space(field: &str, s: &str) -> std::result::Result<Space, String> {
    match s {
        "l2" => Ok(Space::L2),
        "cosine" => Ok(Space::Cosine),
        "ip" => Ok(Space::Ip),
        other => Err(format!(
            "{field} must be one of l2, cosine, ip, got {}",
            quote(other)
        )),
    }
}

/// A raw setting, from `configuration.hnsw` JSON or a legacy `hnsw:*` metadata value.
enum Raw<'a> {
    Json(&'a Value),
    Meta(&'a MetadataValue),
}

impl Raw<'_> {
    fn show(&self) -> String {
        match self {
            Raw::Json(v) => show(v),
            Raw::Meta(v) => quote(&serde_json::to_string(v).unwrap_or_default()),
        }
    }

    fn uint(&self, field: &str, min: usize, max: usize) -> std::result::Result<usize, String> {
        let v = match self {
            Raw::Json(v) => v.as_u64(),
            Raw::Meta(MetadataValue::Int(i)) => u64::try_from(*i).ok(),
            Raw::Meta(_) => None,
        };
        match v.and_then(|v| usize::try_from(v).ok()) {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{field} must be an integer between {min} and {max}, got {}",
                self.show()
            )),
        }
    }

    fn float(&self, field: &str, min: f64, max: f64) -> std::result::Result<f64, String> {
        let v = match self {
            Raw::Json(v) => v.as_f64(),
            Raw::Meta(MetadataValue::Int(i)) => Some(*i as f64),
            Raw::Meta(MetadataValue::Float(f)) => Some(*f),
            Raw::Meta(_) => None,
        };
        match v {
            Some(v) if v.is_finite() && (min..=max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{field} must be a number between {min} and {max}, got {}",
                self.show()
            )),
        }
    }

    fn space(&self, field: &str) -> std::result::Result<Space, String> {
        let s = match self {
            Raw::Json(Value::String(s)) => s.as_str(),
            Raw::Meta(MetadataValue::Str(s)) => s.as_str(),
            _ => {
                return Err(format!(
                    "{field} must be one of l2, cosine, ip, got {}",
                    self.show()
                ))
            }
        };
        parse_space(field, s)
    }
}

/// The HNSW settings, by their `configuration.hnsw` name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    Space,
    EfConstruction,
    EfSearch,
    MaxNeighbors,
    NumThreads,
    BatchSize,
    SyncThreshold,
    ResizeFactor,
}

impl Setting {
    const ALL: [(&'static str, &'static str, Setting); 8] = [
        ("space", "hnsw:space", Setting::Space),
        (
            "ef_construction",
            "hnsw:construction_ef",
            Setting::EfConstruction,
        ),
        ("ef_search", "hnsw:search_ef", Setting::EfSearch),
        ("max_neighbors", "hnsw:M", Setting::MaxNeighbors),
        ("num_threads", "hnsw:num_threads", Setting::NumThreads),
        ("batch_size", "hnsw:batch_size", Setting::BatchSize),
        (
            "sync_threshold",
            "hnsw:sync_threshold",
            Setting::SyncThreshold,
        ),
        ("resize_factor", "hnsw:resize_factor", Setting::ResizeFactor),
    ];

    fn mutable(self) -> bool {
        !matches!(self, Setting::Space | Setting::EfConstruction)
    }

    /// Sets `field` (named as the caller spelled it) from `raw`.
    fn apply(self, field: &str, raw: Raw<'_>, cfg: &mut HnswConfiguration) -> Detail {
        match self {
            Setting::Space => cfg.space = raw.space(field)?,
            Setting::EfConstruction => cfg.ef_construction = raw.uint(field, 1, MAX_HNSW_EF)?,
            Setting::EfSearch => cfg.ef_search = raw.uint(field, 1, MAX_HNSW_EF)?,
            Setting::MaxNeighbors => cfg.max_neighbors = raw.uint(field, 1, MAX_HNSW_NEIGHBORS)?,
            Setting::NumThreads => cfg.num_threads = Some(raw.uint(field, 1, MAX_HNSW_THREADS)?),
            Setting::BatchSize => cfg.batch_size = raw.uint(field, 2, MAX_HNSW_BATCH_SIZE)?,
            Setting::SyncThreshold => {
                cfg.sync_threshold = raw.uint(field, 2, MAX_HNSW_SYNC_THRESHOLD)?
            }
            Setting::ResizeFactor => {
                cfg.resize_factor = raw.float(field, 1.0, MAX_HNSW_RESIZE_FACTOR)?
            }
        }
        Ok(())
    }
}

/// The `hnsw` member of a `configuration` object: `None` when absent or `null`.
fn hnsw_object<'a>(
    config: Option<&'a Value>,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    let config = match config {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(c)) => c,
        Some(other) => {
            return Err(Error::invalid(format!(
                "{what} must be an object or null, got {}",
                show(other)
            )))
        }
    };
    match config.get("hnsw") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(h)) => Ok(Some(h)),
        Some(other) => Err(Error::invalid(format!(
            "{what}.hnsw must be an object or null, got {}",
            show(other)
        ))),
    }
}

/// The HNSW configuration of a new collection.
///
/// `config` is the request's `configuration` object (its `hnsw` member is read; other
/// members are not checked here). `legacy_metadata` is the collection metadata, whose
/// `hnsw:*` keys (`hnsw:space`, `hnsw:construction_ef`, `hnsw:search_ef`, `hnsw:M`,
/// `hnsw:num_threads`, `hnsw:batch_size`, `hnsw:sync_threshold`, `hnsw:resize_factor`)
/// apply first; fields set in `configuration.hnsw` override them. Unset fields keep the
/// defaults; a JSON `null` field counts as unset.
pub fn hnsw_configuration_from_json(
    config: Option<&Value>,
    legacy_metadata: Option<&Metadata>,
) -> Result<HnswConfiguration> {
    let mut cfg = HnswConfiguration::default();
    for (key, value) in legacy_metadata.into_iter().flatten() {
        if !key.starts_with("hnsw:") {
            continue;
        }
        let Some(&(_, _, setting)) = Setting::ALL.iter().find(|(_, legacy, _)| legacy == key)
        else {
            return Err(hnsw_err(format!(
                "unknown legacy metadata key {}",
                quote(key)
            )));
        };
        setting
            .apply(key, Raw::Meta(value), &mut cfg)
            .map_err(hnsw_err)?;
    }
    if let Some(hnsw) = hnsw_object(config, "configuration")? {
        apply_hnsw_fields(hnsw, &mut cfg).map_err(hnsw_err)?;
    }
    Ok(cfg)
}

/// Sets the `configuration.hnsw` fields of `hnsw` (`null`: unset) on `cfg`, each checked;
/// the error says what is wrong, for the caller to say where.
pub(crate) fn apply_hnsw_fields(hnsw: &Map<String, Value>, cfg: &mut HnswConfiguration) -> Detail {
    for (field, value) in hnsw {
        let Some(&(_, _, setting)) = Setting::ALL.iter().find(|(name, _, _)| name == field) else {
            return Err(format!(
                "unknown field {} in configuration.hnsw",
                quote(field)
            ));
        };
        if !value.is_null() {
            setting.apply(field, Raw::Json(value), cfg)?;
        }
    }
    Ok(())
}

/// The HNSW configuration after a modify. `new_configuration` is the request's
/// `new_configuration` object (its `hnsw` member is read); only `ef_search`,
/// `max_neighbors`, `num_threads`, `resize_factor`, `sync_threshold` and `batch_size` may
/// change. `null` fields and a missing or `null` `hnsw` leave the current values.
pub fn hnsw_update_from_json(
    new_configuration: &Value,
    current: &HnswConfiguration,
) -> Result<HnswConfiguration> {
    let mut cfg = current.clone();
    if let Some(hnsw) = hnsw_object(Some(new_configuration), "new_configuration")? {
        for (field, value) in hnsw {
            let setting = Setting::ALL.iter().find(|(name, _, _)| name == field);
            match setting {
                Some(&(_, _, s)) if s.mutable() => {
                    if !value.is_null() {
                        s.apply(field, Raw::Json(value), &mut cfg)
                            .map_err(hnsw_err)?;
                    }
                }
                Some(_) => {
                    return Err(hnsw_err(format!(
                        "{field} cannot be changed after the collection is created"
                    )))
                }
                None => {
                    return Err(hnsw_err(format!(
                        "unknown field {} in new_configuration.hnsw",
                        quote(field)
                    )))
                }
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_helpers::*;
    use super::*;

    #[test]
    fn hnsw_defaults_and_fields() {
        assert_eq!(
            hnsw_configuration_from_json(None, None).unwrap(),
            HnswConfiguration::default()
        );
        assert_eq!(
            hnsw_configuration_from_json(Some(&json!({"hnsw": null, "spann": null})), None)
                .unwrap(),
            HnswConfiguration::default()
        );
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {
                "space": "cosine", "ef_construction": 200, "ef_search": 50,
                "max_neighbors": 32, "num_threads": 4, "batch_size": 10,
                "sync_threshold": 500, "resize_factor": 2
            }, "embedding_function": {"type": "legacy"}})),
            None,
        )
        .unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Cosine,
                ef_construction: 200,
                ef_search: 50,
                max_neighbors: 32,
                num_threads: Some(4),
                batch_size: 10,
                sync_threshold: 500,
                resize_factor: 2.0,
            }
        );
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {"space": "ip", "ef_search": null}})),
            None,
        )
        .unwrap();
        assert_eq!(cfg.space, Space::Ip);
        assert_eq!(cfg.ef_search, 100);
    }

    #[test]
    fn hnsw_legacy_metadata() {
        let legacy = meta(json!({
            "hnsw:space": "ip", "hnsw:construction_ef": 64, "hnsw:search_ef": 20, "hnsw:M": 8,
            "hnsw:num_threads": 2, "hnsw:batch_size": 50, "hnsw:sync_threshold": 100,
            "hnsw:resize_factor": 1.5, "other": "kept"
        }));
        let cfg = hnsw_configuration_from_json(None, Some(&legacy)).unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Ip,
                ef_construction: 64,
                ef_search: 20,
                max_neighbors: 8,
                num_threads: Some(2),
                batch_size: 50,
                sync_threshold: 100,
                resize_factor: 1.5,
            }
        );
        // configuration.hnsw overrides legacy keys field by field.
        let cfg = hnsw_configuration_from_json(
            Some(&json!({"hnsw": {"space": "cosine"}})),
            Some(&legacy),
        )
        .unwrap();
        assert_eq!(cfg.space, Space::Cosine);
        assert_eq!(cfg.max_neighbors, 8);
        let int_resize = meta(json!({"hnsw:resize_factor": 2}));
        assert_eq!(
            hnsw_configuration_from_json(None, Some(&int_resize))
                .unwrap()
                .resize_factor,
            2.0
        );

        for (m, needle) in [
            (
                json!({"hnsw:space": "euclid"}),
                "hnsw:space must be one of l2, cosine, ip",
            ),
            (json!({"hnsw:space": 1}), "hnsw:space must be one of"),
            (
                json!({"hnsw:M": 0}),
                "hnsw:M must be an integer between 1 and 256, got 0",
            ),
            (json!({"hnsw:M": "16"}), "hnsw:M must be an integer"),
            (
                json!({"hnsw:construction_ef": -1}),
                "hnsw:construction_ef must be",
            ),
            (json!({"hnsw:search_ef": 1.5}), "hnsw:search_ef must be"),
            (
                json!({"hnsw:batch_size": 1}),
                "hnsw:batch_size must be an integer between 2",
            ),
            (
                json!({"hnsw:sync_threshold": 1}),
                "hnsw:sync_threshold must be",
            ),
            (
                json!({"hnsw:resize_factor": 0.5}),
                "hnsw:resize_factor must be a number",
            ),
            (json!({"hnsw:num_threads": 0}), "hnsw:num_threads must be"),
            (
                json!({"hnsw:foo": 1}),
                "unknown legacy metadata key hnsw:foo",
            ),
        ] {
            fails(hnsw_configuration_from_json(None, Some(&meta(m))), needle);
        }
    }

    #[test]
    fn hnsw_errors() {
        let bad = |hnsw: Value, needle: &str| {
            fails(
                hnsw_configuration_from_json(Some(&json!({ "hnsw": hnsw })), None),
                needle,
            )
        };
        bad(
            json!({"space": "foo"}),
            "Invalid HNSW parameters: space must be one of l2, cosine, ip",
        );
        bad(json!({"space": 3}), "space must be one of");
        bad(
            json!({"ef_construction": 0}),
            "ef_construction must be an integer between 1 and",
        );
        bad(json!({"ef_construction": 10001}), "ef_construction must be");
        bad(json!({"ef_search": 100000}), "ef_search must be");
        bad(json!({"ef_search": "10"}), "ef_search must be");
        bad(json!({"max_neighbors": 0}), "max_neighbors must be");
        bad(json!({"max_neighbors": 5000}), "max_neighbors must be");
        bad(json!({"max_neighbors": 16.5}), "max_neighbors must be");
        bad(json!({"num_threads": 0}), "num_threads must be");
        bad(
            json!({"batch_size": 1}),
            "batch_size must be an integer between 2",
        );
        bad(json!({"sync_threshold": 0}), "sync_threshold must be");
        bad(
            json!({"resize_factor": 0.9}),
            "resize_factor must be a number between 1",
        );
        bad(json!({"resize_factor": 1000}), "resize_factor must be");
        bad(json!({"resize_factor": "big"}), "resize_factor must be");
        bad(json!({"M": 16}), "unknown field M in configuration.hnsw");
        bad(json!(3), "configuration.hnsw must be an object or null");
        fails(
            hnsw_configuration_from_json(Some(&json!("x")), None),
            "configuration must be an object",
        );
    }

    #[test]
    fn hnsw_updates() {
        let current = HnswConfiguration {
            space: Space::Cosine,
            ..Default::default()
        };
        assert_eq!(
            hnsw_update_from_json(&Value::Null, &current).unwrap(),
            current
        );
        assert_eq!(
            hnsw_update_from_json(&json!({"hnsw": null, "embedding_function": null}), &current)
                .unwrap(),
            current
        );
        let cfg = hnsw_update_from_json(
            &json!({"hnsw": {"ef_search": 200, "max_neighbors": 24, "num_threads": 3,
                             "resize_factor": 1.5, "sync_threshold": 2000, "batch_size": 64}}),
            &current,
        )
        .unwrap();
        assert_eq!(
            cfg,
            HnswConfiguration {
                space: Space::Cosine,
                ef_construction: 100,
                ef_search: 200,
                max_neighbors: 24,
                num_threads: Some(3),
                batch_size: 64,
                sync_threshold: 2000,
                resize_factor: 1.5,
            }
        );
        let keep = hnsw_update_from_json(&json!({"hnsw": {"ef_search": null}}), &cfg).unwrap();
        assert_eq!(keep, cfg);
        let upd = |hnsw: Value| hnsw_update_from_json(&json!({ "hnsw": hnsw }), &current);
        fails(upd(json!({"space": "l2"})), "space cannot be changed");
        fails(
            upd(json!({"ef_construction": 10})),
            "ef_construction cannot be changed",
        );
        fails(
            upd(json!({"foo": 1})),
            "unknown field foo in new_configuration.hnsw",
        );
        fails(upd(json!({"ef_search": 0})), "ef_search must be");
        fails(upd(json!({"batch_size": 1})), "batch_size must be");
        fails(
            hnsw_update_from_json(&json!([]), &current),
            "new_configuration must be an object",
        );
    }
}
