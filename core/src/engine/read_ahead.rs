//! Queries that start before the catalog answers.
//!
//! A query costs one catalog read before its search: the collection's record and
//! manifest ([`Engine::get_collection_with_manifest`]). On DynamoDB that read is a few
//! milliseconds of waiting, which Lambda bills like the search itself. A collection
//! that is read and not written answers the same record and manifest time after time.
//! So where the catalog answered the same pair the last two times it was asked (the
//! collection is *settled*, [`Engine::settled`]), a query may search that pair while
//! the catalog is read again, and keep the answer only if the catalog answers the same
//! pair once more ([`crate::access::ScopedCollection::open_and_query`]). Otherwise the
//! answer is dropped and the query runs on what the catalog answered.
//!
//! A query never answers from anything the catalog did not confirm. A search is a
//! function of the collection record, the manifest and the objects the manifest names,
//! and objects are never rewritten, so the same pair gives the same answer. Access is
//! decided on the confirmed read alone, before the answer is used.
//!
//! Only where catalog reads take time: [`EngineConfig::read_ahead`] (the Lambda
//! functions that serve reads). A collection being written is rarely settled, so its
//! queries rarely search twice.
//!
//! [`EngineConfig::read_ahead`]: super::EngineConfig::read_ahead

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::Engine;
use crate::catalog::Manifest;
use crate::model::Collection;

/// Collections remembered at most; past it the memory starts over.
const MAX_COLLECTIONS: usize = 1024;

/// A collection and its manifest, as the catalog answered them.
pub type CatalogAnswer = Arc<(Collection, Manifest)>;

/// What the catalog last answered per collection, and whether it answered the same the
/// time before.
#[derive(Debug, Default)]
pub(super) struct Answers {
    last: Mutex<HashMap<Uuid, (CatalogAnswer, bool)>>,
}

impl Answers {
    fn note(&self, collection: &Collection, manifest: &Manifest) {
        let mut last = self.last.lock().expect("catalog answers lock");
        let settled = last
            .get(&collection.id)
            .is_some_and(|(a, _)| a.0 == *collection && a.1 == *manifest);
        let answer = match last.get(&collection.id) {
            Some((a, _)) if settled => a.clone(),
            _ => Arc::new((collection.clone(), manifest.clone())),
        };
        if last.len() >= MAX_COLLECTIONS && !last.contains_key(&collection.id) {
            last.clear();
        }
        last.insert(collection.id, (answer, settled));
    }

    fn settled(&self, id: Uuid) -> Option<CatalogAnswer> {
        let last = self.last.lock().expect("catalog answers lock");
        last.get(&id)
            .filter(|(_, settled)| *settled)
            .map(|(a, _)| a.clone())
    }
}

impl Engine {
    /// The collection `id` and its manifest, if the catalog answered the same the last two
    /// times it was read through [`Engine::get_collection_with_manifest`] (and the engine
    /// reads ahead, [`super::EngineConfig::read_ahead`]).
    pub fn settled(&self, id: Uuid) -> Option<CatalogAnswer> {
        self.config
            .read_ahead
            .then(|| self.answers.settled(id))
            .flatten()
    }

    /// Notes what the catalog answered for a collection.
    pub(super) fn note_answer(&self, collection: &Collection, manifest: &Manifest) {
        if self.config.read_ahead {
            self.answers.note(collection, manifest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: u64) -> (Collection, Manifest) {
        let collection = Collection {
            id: Uuid::from_u128(7),
            name: "c".into(),
            tenant: "t".into(),
            database: "d".into(),
            metadata: None,
            configuration: Default::default(),
            dimension: Some(3),
        };
        let manifest = Manifest {
            version,
            dimension: Some(3),
            ..Manifest::new(Vec::new())
        };
        (collection, manifest)
    }

    #[test]
    fn a_collection_is_settled_once_the_catalog_answers_the_same_twice() {
        let answers = Answers::default();
        let (c, m1) = answer(1);
        assert!(answers.settled(c.id).is_none());
        answers.note(&c, &m1);
        assert!(answers.settled(c.id).is_none(), "one answer is not settled");
        answers.note(&c, &m1);
        assert_eq!(*answers.settled(c.id).unwrap(), (c.clone(), m1.clone()));
        // A write: the next answer differs, and it takes two alike to settle again.
        let (_, m2) = answer(2);
        answers.note(&c, &m2);
        assert!(answers.settled(c.id).is_none());
        answers.note(&c, &m2);
        assert_eq!(answers.settled(c.id).unwrap().1.version, 2);
        // A change of the record alone (a rename) unsettles it too.
        let mut renamed = c.clone();
        renamed.name = "d".into();
        answers.note(&renamed, &m2);
        assert!(answers.settled(c.id).is_none());
    }

    #[test]
    fn the_memory_is_bounded() {
        let answers = Answers::default();
        let (mut c, m) = answer(1);
        for i in 0..(MAX_COLLECTIONS as u128 + 10) {
            c.id = Uuid::from_u128(i);
            answers.note(&c, &m);
            answers.note(&c, &m);
        }
        assert!(answers.last.lock().unwrap().len() <= MAX_COLLECTIONS);
        assert!(answers.settled(c.id).is_some());
    }
}
