//! Infrastructure as code: the plan written as variables for the tools
//! that own the infrastructure, atomically (a temporary file in the same
//! directory, synced, then renamed), keeping every other key in the file.
//!
//! - Terraform: a `*.auto.tfvars.json` file, which Terraform loads by
//!   itself: one JSON object of variable name to value
//!   (`{"shadow_web_replicas": 4}`).
//! - CloudFormation: a parameters file as `aws cloudformation
//!   create-stack|update-stack --parameters file://…` reads it: a JSON
//!   array of `{"ParameterKey": "ShadowWebReplicas", "ParameterValue": "4"}`
//!   (values are strings).
//!
//! "Ready" here means written: applying the file is the IaC tool's run.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};
use shadow_api::provision::Resource;

use super::backend::{Backend, BackendError, Change};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Terraform,
    CloudFormation,
}

#[derive(Debug, Clone)]
pub struct IacFile {
    pub format: Format,
    pub path: PathBuf,
}

/// `shadow_<target>_<resource>`: Terraform's identifier rules (letters,
/// digits, `_`, `-`; not starting with a digit).
pub fn terraform_key(target: &str, resource: Resource) -> String {
    let clean: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("shadow_{clean}_{}", resource.name())
}

/// `Shadow<Target><Resource>`: CloudFormation's logical IDs are alphanumeric.
pub fn cloudformation_key(target: &str, resource: Resource) -> String {
    let mut out = String::from("Shadow");
    for word in target
        .split(|c: char| !c.is_ascii_alphanumeric())
        .chain([resource.name()])
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// A whole number shows as one; CPU keeps its fraction.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64((v * 1000.0).round() / 1000.0)
            .map_or(Value::Null, Value::Number)
    }
}

impl IacFile {
    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
        let what = format!("{what} {}", self.path.display());
        move |source| BackendError::Io { what, source }
    }

    fn read(&self) -> Result<Option<Value>, BackendError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| BackendError::Io {
                    what: format!("reading {} (not JSON; left as it is)", self.path.display()),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("reading")(e)),
        }
    }

    /// Sets one key, keeping the others.
    pub fn set(&self, target: &str, resource: Resource, value: f64) -> Result<(), BackendError> {
        let doc = match (self.format, self.read()?) {
            (Format::Terraform, old) => {
                let mut vars = match old {
                    Some(Value::Object(m)) => m,
                    None => Map::new(),
                    Some(_) => return Err(self.shape("a JSON object of variables")),
                };
                vars.insert(terraform_key(target, resource), number(value));
                Value::Object(vars)
            }
            (Format::CloudFormation, old) => {
                let mut params = match old {
                    Some(Value::Array(a)) => a,
                    None => Vec::new(),
                    Some(_) => {
                        return Err(self.shape("a JSON array of ParameterKey/ParameterValue"));
                    }
                };
                let key = cloudformation_key(target, resource);
                let text = match number(value) {
                    Value::Number(n) => n.to_string(),
                    other => other.to_string(),
                };
                params.retain(|p| p.get("ParameterKey").and_then(Value::as_str) != Some(&key));
                params.push(serde_json::json!({"ParameterKey": key, "ParameterValue": text}));
                Value::Array(params)
            }
        };
        let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        bytes.push(b'\n');
        self.write_atomically(&bytes)
    }

    fn shape(&self, want: &str) -> BackendError {
        BackendError::Io {
            what: format!("{} is not {want}; left as it is", self.path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        }
    }

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), BackendError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut f =
            std::fs::File::create(&tmp).map_err(self.io("creating a temporary file for"))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(self.io("writing"))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io("renaming into")(e)
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Backend for IacFile {
    fn apply(&self, change: &Change<'_>) -> Result<(), BackendError> {
        self.set(change.target, change.resource, change.to)
    }

    fn name(&self) -> &'static str {
        match self.format {
            Format::Terraform => "terraform",
            Format::CloudFormation => "cloudformation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shadow-iac-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn terraform_variables_are_a_json_object_and_other_keys_stay() {
        let d = dir("tf");
        let path = d.join("shadow.auto.tfvars.json");
        std::fs::write(&path, r#"{"region": "eu-west-1"}"#).unwrap();
        let f = IacFile {
            format: Format::Terraform,
            path: path.clone(),
        };
        f.set("web", Resource::Replicas, 4.0).unwrap();
        f.set("web", Resource::Cpu, 1.25).unwrap();
        f.set("web", Resource::Replicas, 6.0).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let m = v.as_object().unwrap();
        assert_eq!(m.len(), 3, "{v}");
        assert_eq!(m["region"], "eu-west-1");
        assert_eq!(m["shadow_web_replicas"], 6);
        assert_eq!(m["shadow_web_cpu"], 1.25);
        // Valid Terraform identifiers, and no temporary file left behind.
        assert!(m.keys().all(|k| {
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn cloudformation_parameters_are_key_value_strings() {
        let d = dir("cfn");
        let f = IacFile {
            format: Format::CloudFormation,
            path: d.join("params.json"),
        };
        f.set("api-gw", Resource::Replicas, 3.0).unwrap();
        f.set("api-gw", Resource::Memory, 536_870_912.0).unwrap();
        f.set("api-gw", Resource::Replicas, 5.0).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&f.path).unwrap()).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 2, "{v}");
        for p in a {
            let o = p.as_object().unwrap();
            assert_eq!(o.len(), 2);
            assert!(
                o["ParameterKey"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric())
            );
            assert!(o["ParameterValue"].is_string());
        }
        let replicas = a
            .iter()
            .find(|p| p["ParameterKey"] == "ShadowApiGwReplicas")
            .unwrap();
        assert_eq!(replicas["ParameterValue"], "5");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_file_of_another_shape_is_left_alone() {
        let d = dir("bad");
        let path = d.join("x.auto.tfvars.json");
        std::fs::write(&path, "[1, 2]").unwrap();
        let f = IacFile {
            format: Format::Terraform,
            path: path.clone(),
        };
        assert!(
            f.set("web", Resource::Cpu, 1.0)
                .unwrap_err()
                .to_string()
                .contains("left as it is")
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[1, 2]");
        std::fs::remove_dir_all(d).unwrap();
    }
}
