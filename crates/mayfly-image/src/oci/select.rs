//! Choosing one image where a layout's index or a `docker save` manifest offers several: the
//! one the user named, else the only one, else the one for this platform. When a choice is
//! needed and none was made, or the name fits none or several, the error lists what is on
//! offer ([`ImageError::ImageChoice`]).
//!
//! A name the user gives matches, from the closest to the loosest (the closest that matches
//! anything wins, and must then match exactly one image):
//! 1. an image's name exactly (`b`, `busybox:1.36`, `docker.io/library/busybox:1.36`), or its
//!    id (the manifest's digest for an OCI layout, the config's for a `docker save`), in full
//!    or by a prefix of at least 12 hex digits after `sha256:`;
//! 2. a name without its registry or namespace (`busybox:1.36` for
//!    `docker.io/library/busybox:1.36`);
//! 3. without a tag, the name with `:latest` (`busybox`), by rules 1 and 2;
//! 4. without a tag or `/`, the tag alone (`1.36` for `busybox:1.36`).

use super::{ARCH, OS};
use crate::ImageError;

/// One image on offer.
#[derive(Debug, Clone)]
pub(super) struct Offer {
    /// Its names (tags or full references), possibly none.
    pub(super) names: Vec<String>,
    /// A digest that identifies it.
    pub(super) id: String,
    /// `os/arch`, when the list says.
    pub(super) platform: Option<String>,
}

impl Offer {
    fn ours(&self) -> bool {
        self.platform.as_deref() == Some(&format!("{OS}/{ARCH}"))
    }

    /// How the image is listed in an error.
    fn label(&self) -> String {
        let mut label = match self.names.as_slice() {
            [] => format!("untagged {}", short_id(&self.id)),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} (also {})", rest.join(", ")),
        };
        if let Some(platform) = &self.platform {
            label.push_str(&format!(" for {platform}"));
        }
        label
    }

    /// How closely `wanted` names this image, 0 being the closest; `None`: not at all.
    fn closeness(&self, wanted: &str) -> Option<u8> {
        if wanted == self.id
            || (wanted.len() >= "sha256:".len() + 12
                && wanted.starts_with("sha256:")
                && self.id.starts_with(wanted))
        {
            return Some(0);
        }
        let untagged = !has_tag(wanted);
        let latest = format!("{wanted}:latest");
        self.names
            .iter()
            .filter_map(|name| {
                if name == wanted {
                    Some(0)
                } else if name.ends_with(&format!("/{wanted}")) {
                    Some(1)
                } else if untagged && (*name == latest || name.ends_with(&format!("/{latest}"))) {
                    Some(2)
                } else if untagged && !wanted.contains('/') && tag_of(name) == Some(wanted) {
                    Some(3)
                } else {
                    None
                }
            })
            .min()
    }
}

/// The first 12 hex digits of a digest.
fn short_id(id: &str) -> String {
    match id.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => id.to_owned(),
    }
}

/// The tag of a reference (`1.36` in `docker.io/library/busybox:1.36`): what follows the last
/// `:` after the last `/` (a `:` before a `/` is a registry's port).
fn tag_of(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map(|(_, tag)| tag)
}

fn has_tag(name: &str) -> bool {
    tag_of(name).is_some()
}

/// Picks one of `offers` (which `what`, such as "this OCI layout", holds), by `wanted` if
/// given; returns its position.
pub(super) fn choose(
    offers: &[Offer],
    wanted: Option<&str>,
    what: &str,
) -> Result<usize, ImageError> {
    let offered = || {
        let mut labels: Vec<String> = offers.iter().map(Offer::label).collect();
        labels.dedup();
        labels
    };
    let candidates: Vec<usize> = match wanted {
        Some(wanted) => {
            let ranked: Vec<(u8, usize)> = offers
                .iter()
                .enumerate()
                .filter_map(|(i, offer)| offer.closeness(wanted).map(|rank| (rank, i)))
                .collect();
            let Some(best) = ranked.iter().map(|(rank, _)| *rank).min() else {
                return Err(ImageError::ImageChoice {
                    problem: format!("{what} has no image named `{wanted}`"),
                    offered: offered(),
                });
            };
            ranked
                .into_iter()
                .filter(|(rank, _)| *rank == best)
                .map(|(_, i)| i)
                .collect()
        }
        None => (0..offers.len()).collect(),
    };
    match candidates.as_slice() {
        [] => Err(ImageError::BadImage {
            path: "".into(),
            reason: format!("{what} lists no image"),
        }),
        [only] => {
            check_platform(&offers[*only], wanted, offers.len() == 1)?;
            Ok(*only)
        }
        several => {
            // Images that differ only by platform (the entries of a multi-platform index
            // without names, or all under one name): this machine's. Otherwise the user says.
            let names = &offers[several[0]].names;
            if several.iter().all(|&i| offers[i].names == *names) {
                by_platform(offers, several, wanted, what)
            } else {
                Err(ImageError::ImageChoice {
                    problem: match wanted {
                        Some(wanted) => format!(
                            "`{wanted}` fits {} images of {what}: give the full name",
                            several.len()
                        ),
                        None => format!(
                            "{what} holds {} images: say which one to import",
                            several.len()
                        ),
                    },
                    offered: offered(),
                })
            }
        }
    }
}

/// Refuses an image for another platform.
fn check_platform(offer: &Offer, wanted: Option<&str>, only: bool) -> Result<(), ImageError> {
    match &offer.platform {
        Some(platform) if !offer.ours() => Err(ImageError::BadImage {
            path: "".into(),
            reason: match wanted {
                Some(wanted) if !only => {
                    format!("image `{wanted}` is for {platform}, not {OS}/{ARCH}")
                }
                _ => format!("its only image is for {platform}, not {OS}/{ARCH}"),
            },
        }),
        _ => Ok(()),
    }
}

/// The one of `candidates` (images alike but for their platform) for this machine.
fn by_platform(
    offers: &[Offer],
    candidates: &[usize],
    wanted: Option<&str>,
    what: &str,
) -> Result<usize, ImageError> {
    let ours: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| offers[i].ours())
        .collect();
    match ours.as_slice() {
        [one] => Ok(*one),
        [] if candidates.iter().any(|&i| offers[i].platform.is_some()) => {
            let platforms: Vec<String> = candidates
                .iter()
                .map(|&i| {
                    offers[i]
                        .platform
                        .clone()
                        .unwrap_or_else(|| "unspecified".to_owned())
                })
                .collect();
            Err(ImageError::BadImage {
                path: "".into(),
                reason: format!(
                    "none of its images{} is for {OS}/{ARCH} (it has {})",
                    wanted.map(|w| format!(" named `{w}`")).unwrap_or_default(),
                    platforms.join(", ")
                ),
            })
        }
        _ => {
            let chosen: Vec<usize> = if ours.is_empty() {
                candidates.to_vec()
            } else {
                ours
            };
            Err(ImageError::ImageChoice {
                problem: format!(
                    "{what} holds {} images{} that nothing tells apart: name one by its id",
                    chosen.len(),
                    wanted.map(|w| format!(" named `{w}`")).unwrap_or_default()
                ),
                offered: chosen.iter().map(|&i| offers[i].id.clone()).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(names: &[&str], id: char, platform: Option<&str>) -> Offer {
        Offer {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            id: format!("sha256:{}", id.to_string().repeat(64)),
            platform: platform.map(str::to_owned),
        }
    }

    fn problem(result: Result<usize, ImageError>) -> String {
        match result {
            Err(err @ ImageError::ImageChoice { .. }) => err.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_match_from_the_closest() {
        let offers = [
            offer(&["a"], 'a', None),
            offer(&["docker.io/library/busybox:1.36"], 'b', None),
            offer(&["localhost:5000/tools:latest", "tools:v2"], 'c', None),
            offer(&[], 'd', None),
        ];
        let pick = |wanted: &str| choose(&offers, Some(wanted), "this OCI layout");
        assert_eq!(pick("a").unwrap(), 0);
        assert_eq!(pick("docker.io/library/busybox:1.36").unwrap(), 1);
        assert_eq!(pick("busybox:1.36").unwrap(), 1);
        assert_eq!(pick("library/busybox:1.36").unwrap(), 1);
        assert_eq!(pick("1.36").unwrap(), 1);
        assert_eq!(pick("tools").unwrap(), 2);
        assert_eq!(pick("v2").unwrap(), 2);
        assert_eq!(pick(&format!("sha256:{}", "d".repeat(64))).unwrap(), 3);
        assert_eq!(pick(&format!("sha256:{}", "d".repeat(12))).unwrap(), 3);
        assert_eq!(
            problem(pick("sha256:ddd")),
            "this OCI layout has no image named `sha256:ddd` (it has a, \
             docker.io/library/busybox:1.36, localhost:5000/tools:latest (also tools:v2), \
             untagged sha256:dddddddddddd)"
        );
        assert!(problem(pick("busybox:1.35")).starts_with("this OCI layout has no image named"));
        // A port is not a tag.
        assert!(pick("5000").is_err());
    }

    #[test]
    fn a_choice_is_needed_between_images_with_different_names() {
        let offers = [
            offer(&["a"], 'a', None),
            offer(&["b"], 'b', None),
            offer(&["c"], 'c', None),
        ];
        assert_eq!(
            problem(choose(&offers, None, "this OCI layout")),
            "this OCI layout holds 3 images: say which one to import (it has a, b, c)"
        );
        // The only image needs no name; one of the same name for each platform neither.
        assert_eq!(choose(&offers[..1], None, "x").unwrap(), 0);
        let platforms = [
            offer(&["v1"], 'a', Some("linux/pdp11")),
            offer(&["v1"], 'b', Some(&format!("{OS}/{ARCH}"))),
        ];
        assert_eq!(choose(&platforms, None, "x").unwrap(), 1);
        assert_eq!(choose(&platforms, Some("v1"), "x").unwrap(), 1);
        // Two candidates for a tag that is only a part of each name.
        let tags = [offer(&["web:1"], 'a', None), offer(&["db:1"], 'b', None)];
        assert_eq!(
            problem(choose(&tags, Some("1"), "this `docker save` archive")),
            "`1` fits 2 images of this `docker save` archive: give the full name \
             (it has web:1, db:1)"
        );
        // Nothing tells two untagged images apart but their ids.
        let untagged = [offer(&[], 'a', None), offer(&[], 'b', None)];
        let message = problem(choose(&untagged, None, "this OCI layout"));
        assert!(
            message.starts_with(
                "this OCI layout holds 2 images that nothing tells apart: name one by its id"
            ),
            "{message}"
        );
        assert!(
            message.contains(&format!("sha256:{}", "b".repeat(64))),
            "{message}"
        );
    }

    #[test]
    fn an_image_for_another_platform_is_refused() {
        let offers = [
            offer(&["x"], 'a', Some("linux/pdp11")),
            offer(&["y"], 'b', None),
        ];
        let err = choose(&offers, Some("x"), "this OCI layout").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unusable image: image `x` is for linux/pdp11, not {OS}/{ARCH}")
        );
    }
}
