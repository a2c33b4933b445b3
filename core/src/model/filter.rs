//! `where` and `where_document` filters: parsing from Chroma's JSON and evaluation.
//! (Being written: see the module's tests for the semantics.)

use serde_json::Value;

use super::record::Metadata;
use crate::error::Result;

/// A parsed `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Where {}

/// A parsed `where_document` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum WhereDocument {}

/// `where` AND `where_document`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub where_: Option<Where>,
    pub where_document: Option<WhereDocument>,
}

impl Where {
    pub fn parse(_v: &Value) -> Result<Self> {
        todo!()
    }
    pub fn matches(&self, _metadata: Option<&Metadata>, _document: Option<&str>) -> bool {
        todo!()
    }
}

impl WhereDocument {
    pub fn parse(_v: &Value) -> Result<Self> {
        todo!()
    }
    pub fn matches(&self, _document: Option<&str>) -> bool {
        todo!()
    }
}

impl Filter {
    /// `Ok(None)` when both are absent or JSON `null`.
    pub fn parse(_where: Option<&Value>, _where_document: Option<&Value>) -> Result<Option<Self>> {
        todo!()
    }
    pub fn matches(&self, _metadata: Option<&Metadata>, _document: Option<&str>) -> bool {
        todo!()
    }
}
