//! The inode table: stable FUSE inode numbers for merged files, keyed by the identity of the
//! real file, plus the names under which each live inode is known.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::layers::{LayerIndex, RealKey};

/// FUSE inode number of the merged root directory.
pub const ROOT_INO: u64 = 1;

/// A live inode of the merged tree.
#[derive(Debug)]
pub struct Node {
    /// Whether this is a directory.
    pub is_dir: bool,
    /// Layer holding the topmost real entry.
    pub layer: LayerIndex,
    /// Directories: merged layers, topmost first.
    pub dir_layers: Vec<LayerIndex>,
    /// (parent inode, name) pairs this inode is reachable under; several for hard links.
    pub aliases: Vec<(u64, OsString)>,
    /// Kernel lookup count.
    pub lookups: u64,
}

/// Inode numbers by real-file identity, and the live nodes.
#[derive(Debug, Default)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<RealKey, u64>,
    next_ino: u64,
}

impl InodeTable {
    /// A table holding only the root directory.
    pub fn new(root_key: RealKey, root_layers: Vec<LayerIndex>) -> InodeTable {
        let mut table = InodeTable {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            next_ino: ROOT_INO + 1,
        };
        table.by_key.insert(root_key, ROOT_INO);
        table.nodes.insert(
            ROOT_INO,
            Node {
                is_dir: true,
                layer: 0,
                dir_layers: root_layers,
                aliases: Vec::new(),
                lookups: 1,
            },
        );
        table
    }

    /// The inode number for a real file, allocated on first sight and never reused.
    pub fn ino_for(&mut self, key: RealKey) -> u64 {
        if let Some(&ino) = self.by_key.get(&key) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_key.insert(key, ino);
        ino
    }

    /// Makes `key` (a new real file, e.g. a copy-up or a fresh create) denote inode `ino`.
    pub fn bind_key(&mut self, key: RealKey, ino: u64) {
        self.by_key.insert(key, ino);
    }

    /// Forgets the mapping of `key` (a lower file whose inode moved to a copy-up).
    pub fn unbind_key(&mut self, key: RealKey) {
        self.by_key.remove(&key);
    }

    /// Records a lookup of `ino` under (`parent`, `name`), creating or refreshing its node.
    #[allow(clippy::too_many_arguments)]
    pub fn remember(
        &mut self,
        ino: u64,
        parent: u64,
        name: &OsStr,
        layer: LayerIndex,
        is_dir: bool,
        dir_layers: Vec<LayerIndex>,
        count_lookup: bool,
    ) {
        let node = self.nodes.entry(ino).or_insert_with(|| Node {
            is_dir,
            layer,
            dir_layers: Vec::new(),
            aliases: Vec::new(),
            lookups: 0,
        });
        node.is_dir = is_dir;
        node.layer = layer;
        node.dir_layers = dir_layers;
        if is_dir {
            node.aliases.clear();
        }
        if !node.aliases.iter().any(|(p, n)| *p == parent && n == name) {
            node.aliases.push((parent, name.to_os_string()));
        }
        if count_lookup {
            node.lookups += 1;
        }
    }

    /// Makes (`parent`, `name`) the first alias of `ino`, the one [`Self::path`] and a copy-up
    /// use: the name the kernel looked up last, for a lower file whose names share an inode
    /// until one of them is copied up.
    pub fn prefer_alias(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            if let Some(at) = node
                .aliases
                .iter()
                .position(|(p, n)| *p == parent && n == name)
            {
                let alias = node.aliases.remove(at);
                node.aliases.insert(0, alias);
            }
        }
    }

    /// The live node `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The live node `ino`, mutably.
    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// Drops `count` kernel references; the node goes when none remain.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    /// Merged relative path of `ino` (empty for the root), through its first usable alias.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        if ino == ROOT_INO {
            return Some(PathBuf::new());
        }
        let node = self.nodes.get(&ino)?;
        node.aliases
            .iter()
            .find_map(|(parent, name)| self.path(*parent).map(|p| p.join(name)))
    }

    /// Removes the alias (`parent`, `name`) from whichever node carries it.
    pub fn drop_alias(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.aliases.retain(|(p, n)| !(*p == parent && n == name));
        }
    }

    /// Moves the alias (`parent`, `name`) of `ino` to (`new_parent`, `new_name`).
    pub fn move_alias(
        &mut self,
        ino: u64,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.aliases.retain(|(p, n)| !(*p == parent && n == name));
            node.aliases.push((new_parent, new_name.to_os_string()));
        }
    }

    /// Live inodes strictly below the directory `dir`.
    pub fn descendants(&self, dir: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for (&ino, node) in &self.nodes {
            if ino != dir && self.is_below(node, dir, 0) {
                out.push(ino);
            }
        }
        out
    }

    fn is_below(&self, node: &Node, dir: u64, depth: usize) -> bool {
        if depth > 4096 {
            return false;
        }
        node.aliases.iter().any(|(parent, _)| {
            *parent == dir
                || self
                    .nodes
                    .get(parent)
                    .is_some_and(|p| self.is_below(p, dir, depth + 1))
        })
    }
}
