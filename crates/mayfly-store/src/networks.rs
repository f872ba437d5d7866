//! Networks and the interfaces allocated on them: one address and one MAC per interface,
//! unique (the table's constraints say so too), allocated inside the owner's own transaction
//! so that a crash leaves either the owner with its interfaces or neither.

use std::net::{Ipv4Addr, Ipv6Addr};

use mayfly_net::{Ipv4Net, Mac};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Store, StoreError, from_json, sql, to_json};

/// A network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// Random id (names its bridge).
    pub id: String,
    /// The bridge's interface name.
    pub bridge: String,
    /// IPv4 subnet.
    pub subnet: Ipv4Net,
    /// Instances reach only the gateway.
    pub isolated: bool,
    /// Outbound traffic is masqueraded.
    pub nat: bool,
    /// Name servers other names are forwarded to (empty: the host's).
    pub upstream: Vec<Ipv4Addr>,
    /// Unix seconds.
    pub created_at: i64,
    /// The IPv6 ULA /64 (`None`: IPv4 only); instances' IPv6 addresses derive from their
    /// IPv4 ones.
    pub subnet6: Option<Ipv6Addr>,
}

/// One interface of an instance or of a running build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRecord {
    /// The instance's (or build's) id.
    pub owner: String,
    /// Its index (`eth<idx>`).
    pub idx: u8,
    /// The network's name.
    pub network: String,
    /// Its address.
    pub ipv4: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
    /// Whether it is a build's lease (dropped at the build's end and at start-up).
    pub build: bool,
    /// Its IPv6 address, derived from `ipv4` and the network's ULA prefix (not stored; `None`
    /// on a network without IPv6).
    pub ipv6: Option<Ipv6Addr>,
}

/// How many times a random MAC is drawn before giving up (a collision is already
/// astronomically rare).
const MAC_TRIES: usize = 16;

/// A network row as SQLite returns it, before decoding.
type RawNet = (
    String,
    String,
    String,
    String,
    bool,
    bool,
    String,
    i64,
    Option<String>,
);

/// An interface row as SQLite returns it, before decoding.
type RawIface = (String, i64, String, String, String, bool, Option<String>);

fn net_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawNet> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn decode_net(raw: RawNet) -> Result<NetworkRecord, StoreError> {
    let (name, id, bridge, subnet, isolated, nat, upstream, created_at, subnet6) = raw;
    let subnet6 = match subnet6 {
        Some(s) => Some(
            s.parse::<Ipv6Addr>()
                .ok()
                .filter(|p| mayfly_net::addr6::is_ula64(*p))
                .ok_or_else(|| StoreError::Corrupt {
                    what: "network IPv6 subnet",
                    detail: s.clone(),
                })?,
        ),
        None => None,
    };
    Ok(NetworkRecord {
        subnet6,
        subnet: subnet
            .parse()
            .map_err(|e: mayfly_net::NetError| StoreError::Corrupt {
                what: "network subnet",
                detail: e.to_string(),
            })?,
        upstream: from_json(&upstream, "network upstream")?,
        name,
        id,
        bridge,
        isolated,
        nat,
        created_at,
    })
}

fn iface_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawIface> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_iface(raw: RawIface) -> Result<InterfaceRecord, StoreError> {
    let (owner, idx, network, ipv4, mac, build, subnet6) = raw;
    let bad = |what: &'static str, detail: String| StoreError::Corrupt { what, detail };
    let ipv4: Ipv4Addr = ipv4
        .parse()
        .map_err(|_| bad("interface address", ipv4.clone()))?;
    let ipv6 = match subnet6 {
        Some(p) => Some(mayfly_net::addr6::derived6(
            p.parse()
                .map_err(|_| bad("network IPv6 subnet", p.clone()))?,
            ipv4,
        )),
        None => None,
    };
    Ok(InterfaceRecord {
        idx: u8::try_from(idx).map_err(|_| bad("interface index", idx.to_string()))?,
        ipv4,
        ipv6,
        mac: mac
            .parse()
            .map_err(|e: mayfly_net::NetError| bad("interface MAC", e.to_string()))?,
        owner,
        network,
        build,
    })
}

const NET_COLUMNS: &str = "name, id, bridge, subnet, isolated, nat, upstream, created_at, subnet6";
/// The last column is the network's IPv6 prefix, from which the IPv6 address derives.
const IFACE_COLUMNS: &str = "owner, idx, network, ipv4, mac, build, \
     (SELECT n.subnet6 FROM networks n WHERE n.name = interfaces.network)";

fn query_ifaces(
    conn: &rusqlite::Connection,
    filter: &str,
    arg: &str,
) -> Result<Vec<InterfaceRecord>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {IFACE_COLUMNS} FROM interfaces {filter} ORDER BY owner, idx"
        ))
        .map_err(sql("list interfaces"))?;
    let raw: Vec<_> = if filter.contains("?1") {
        stmt.query_map([arg], iface_from_row)
    } else {
        stmt.query_map([], iface_from_row)
    }
    .map_err(sql("list interfaces"))?
    .collect::<Result<_, _>>()
    .map_err(sql("list interfaces"))?;
    raw.into_iter().map(decode_iface).collect()
}

/// Gives `owner` one interface on each of `networks` (index = position), each with the first
/// free address of the network's subnet and a random MAC, inside `tx`.
pub(crate) fn allocate(
    tx: &Transaction<'_>,
    owner: &str,
    networks: &[String],
    build: bool,
) -> Result<(), StoreError> {
    for (idx, name) in networks.iter().enumerate() {
        let net = tx
            .query_row(
                &format!("SELECT {NET_COLUMNS} FROM networks WHERE name = ?1"),
                [name],
                net_from_row,
            )
            .optional()
            .map_err(sql("look up network"))?
            .ok_or_else(|| StoreError::NotFound {
                kind: "network",
                name: name.clone(),
            })
            .and_then(decode_net)?;
        let taken: Vec<Ipv4Addr> = {
            let mut stmt = tx
                .prepare("SELECT ipv4 FROM interfaces WHERE network = ?1")
                .map_err(sql("allocate an address"))?;
            let rows: Vec<String> = stmt
                .query_map([name], |r| r.get(0))
                .map_err(sql("allocate an address"))?
                .collect::<Result<_, _>>()
                .map_err(sql("allocate an address"))?;
            rows.iter().filter_map(|s| s.parse().ok()).collect()
        };
        let ipv4 = net
            .subnet
            .first_free(&taken)
            .ok_or_else(|| StoreError::SubnetExhausted {
                network: name.clone(),
                subnet: net.subnet.to_string(),
                in_use: u32::try_from(taken.len()).unwrap_or(u32::MAX),
            })?;
        let mut inserted = false;
        for _ in 0..MAC_TRIES {
            let mac = Mac::random().to_string();
            let clash = tx
                .query_row(
                    "SELECT 1 FROM interfaces WHERE mac = ?1",
                    [&mac],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql("allocate a MAC"))?
                .is_some();
            if clash {
                continue;
            }
            tx.execute(
                "INSERT INTO interfaces (owner, idx, network, ipv4, mac, build) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![owner, i64::try_from(idx).unwrap_or(i64::MAX), name, ipv4.to_string(), mac, build],
            )
            .map_err(sql("insert interface"))?;
            inserted = true;
            break;
        }
        if !inserted {
            return Err(StoreError::Corrupt {
                what: "interface MAC",
                detail: format!("{MAC_TRIES} random MACs were all taken"),
            });
        }
    }
    Ok(())
}

/// The instances (by name; `build <id>` for a running build) with an interface on network
/// `name`.
fn users_of(conn: &rusqlite::Connection, name: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT COALESCE(i.name, 'build ' || f.owner) FROM interfaces f
             LEFT JOIN instances i ON i.id = f.owner WHERE f.network = ?1 ORDER BY 1",
        )
        .map_err(sql("find a network's users"))?;
    stmt.query_map([name], |r| r.get(0))
        .map_err(sql("find a network's users"))?
        .collect::<Result<_, _>>()
        .map_err(sql("find a network's users"))
}

impl Store {
    /// The instances (by name; `build <id>` for a running build) with an interface on
    /// network `name`.
    pub fn network_users(&self, name: &str) -> Result<Vec<String>, StoreError> {
        users_of(&self.conn, name)
    }

    /// Catalogues network `rec`, refusing a taken name or a subnet that overlaps another
    /// network's.
    pub fn create_network(&mut self, rec: &NetworkRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let existing: Vec<RawNet> = {
            let mut stmt = tx
                .prepare(&format!("SELECT {NET_COLUMNS} FROM networks"))
                .map_err(sql("list networks"))?;
            stmt.query_map([], net_from_row)
                .map_err(sql("list networks"))?
                .collect::<Result<_, _>>()
                .map_err(sql("list networks"))?
        };
        for raw in existing {
            let other = decode_net(raw)?;
            if other.name == rec.name {
                return Err(StoreError::AlreadyExists {
                    kind: "network",
                    name: rec.name.clone(),
                });
            }
            if other.subnet.overlaps(&rec.subnet) {
                return Err(StoreError::SubnetOverlaps {
                    subnet: rec.subnet.to_string(),
                    other: other.name,
                    other_subnet: other.subnet.to_string(),
                });
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO networks ({NET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                rec.name,
                rec.id,
                rec.bridge,
                rec.subnet.to_string(),
                rec.isolated,
                rec.nat,
                to_json(&rec.upstream),
                rec.created_at,
                rec.subnet6.map(|p| p.to_string())
            ],
        )
        .map_err(sql("insert network"))?;
        tx.commit().map_err(sql("commit"))
    }

    /// Every network, by name.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {NET_COLUMNS} FROM networks ORDER BY name"))
            .map_err(sql("list networks"))?;
        let raw: Vec<RawNet> = stmt
            .query_map([], net_from_row)
            .map_err(sql("list networks"))?
            .collect::<Result<_, _>>()
            .map_err(sql("list networks"))?;
        raw.into_iter().map(decode_net).collect()
    }

    /// Network `name`.
    pub fn network(&self, name: &str) -> Result<NetworkRecord, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {NET_COLUMNS} FROM networks WHERE name = ?1"),
                [name],
                net_from_row,
            )
            .optional()
            .map_err(sql("look up network"))?
            .ok_or_else(|| StoreError::NotFound {
                kind: "network",
                name: name.to_owned(),
            })
            .and_then(decode_net)
    }

    /// Deletes network `name`; refused while interfaces are on it (naming their instances,
    /// or `build <id>` for a running build).
    pub fn delete_network(&mut self, name: &str) -> Result<NetworkRecord, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        let rec = tx
            .query_row(
                &format!("SELECT {NET_COLUMNS} FROM networks WHERE name = ?1"),
                [name],
                net_from_row,
            )
            .optional()
            .map_err(sql("look up network"))?
            .ok_or_else(|| StoreError::NotFound {
                kind: "network",
                name: name.to_owned(),
            })
            .and_then(decode_net)?;
        let users = users_of(&tx, name)?;
        if !users.is_empty() {
            return Err(StoreError::NetworkInUse {
                network: name.to_owned(),
                users,
            });
        }
        tx.execute("DELETE FROM networks WHERE name = ?1", [name])
            .map_err(sql("delete network"))?;
        tx.commit().map_err(sql("commit"))?;
        Ok(rec)
    }

    /// The interfaces of `owner` (an instance or build id), by index.
    pub fn interfaces(&self, owner: &str) -> Result<Vec<InterfaceRecord>, StoreError> {
        query_ifaces(&self.conn, "WHERE owner = ?1", owner)
    }

    /// Every interface on network `network`.
    pub fn network_interfaces(&self, network: &str) -> Result<Vec<InterfaceRecord>, StoreError> {
        query_ifaces(&self.conn, "WHERE network = ?1", network)
    }

    /// Every interface.
    pub fn all_interfaces(&self) -> Result<Vec<InterfaceRecord>, StoreError> {
        query_ifaces(&self.conn, "", "")
    }

    /// Leases build `build_id` one interface on each of `networks` (dropped by
    /// [`Store::release_interfaces`] at its end, or by [`Store::drop_build_leases`]).
    pub fn lease_build_interfaces(
        &mut self,
        build_id: &str,
        networks: &[String],
    ) -> Result<Vec<InterfaceRecord>, StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        allocate(&tx, build_id, networks, true)?;
        tx.commit().map_err(sql("commit"))?;
        self.interfaces(build_id)
    }

    /// Releases every interface of `owner`.
    pub fn release_interfaces(&mut self, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM interfaces WHERE owner = ?1", [owner])
            .map(|_| ())
            .map_err(sql("release interfaces"))
    }

    /// Drops every build's lease (start-up: no build survives a daemon); returns how many.
    pub fn drop_build_leases(&mut self) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM interfaces WHERE build = 1", [])
            .map_err(sql("drop build leases"))
    }
}
