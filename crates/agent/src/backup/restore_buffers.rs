//! How many part buffers a restore holds, so that its memory stays bounded whatever the part
//! size of the backup it reads: parts of [`PART_SIZE`] get the full pipeline (`concurrency`
//! downloads, a decoder per core), larger parts (S3's default, `backup.part_size_mib`, older
//! backups) fewer decoders, then fewer downloads.

use pgec2_core::manifest::BackupManifest;

use super::upload::PART_SIZE;

/// Bytes of part buffers (stored and decoded) a restore holds at most, when its parts are larger
/// than [`PART_SIZE`]; at [`PART_SIZE`] and the default concurrency it holds less (9 buffers).
pub const RESTORE_BUFFER_BUDGET: u64 = 32 * 1024 * 1024;

/// The buffers of one restore pipeline ([`super::extract::run_pipeline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreBuffers {
    /// Requests in flight.
    pub downloads: usize,
    /// Decoder threads.
    pub decoders: usize,
}

impl RestoreBuffers {
    /// For `concurrency` downloads on `cores` cores, of parts whose largest holds `largest_part`
    /// bytes (stored or decoded, whichever is more): `concurrency` downloads and a decoder per
    /// core (at most `concurrency`), as many as parts of [`PART_SIZE`] get. For larger parts,
    /// decoders first, then downloads, are lowered until the buffers fit
    /// [`RESTORE_BUFFER_BUDGET`] (or what the full pipeline takes at [`PART_SIZE`], if more),
    /// never below one of each: one decoder decompressed about 1.7 GB/s of content on a 2-vCPU
    /// host (docs/benchmarks.md, round nine), more than a store's downloads brought, and the
    /// downloads are what keeps a restore from S3 busy.
    pub fn plan(concurrency: usize, cores: usize, largest_part: u64) -> Self {
        let concurrency = concurrency.max(1);
        let mut buffers = Self { downloads: concurrency, decoders: cores.max(1).min(concurrency) };
        let budget = RESTORE_BUFFER_BUDGET.max(buffers.bytes(PART_SIZE as u64));
        let part = largest_part.max(PART_SIZE as u64);
        while buffers.bytes(part) > budget && (buffers.downloads > 1 || buffers.decoders > 1) {
            if buffers.decoders > 1 {
                buffers.decoders -= 1;
            } else {
                buffers.downloads -= 1;
            }
        }
        buffers
    }

    /// The plan for reading `manifest`'s parts with `concurrency` downloads on this host's cores.
    pub fn for_manifest(manifest: &BackupManifest, concurrency: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        let largest = manifest.parts.iter().map(|part| part.content_bytes.max(part.stored_bytes)).max();
        Self::plan(concurrency, cores, largest.unwrap_or(0))
    }

    /// Bytes of all buffers when each holds `part` bytes.
    pub fn bytes(&self, part: u64) -> u64 {
        (self.stored() + self.content()) as u64 * part
    }

    /// Buffers of stored bytes: one per download and one per decoder.
    pub fn stored(&self) -> usize {
        self.downloads + self.decoders
    }

    /// Buffers of decoded content: one per decoder and the writer's.
    pub fn content(&self) -> usize {
        self.decoders + 1
    }

    /// Parts a reader that holds each part whole (its stored bytes and its content at once, as
    /// `backup-verify` does) may have in flight within the same buffers: two buffers each, and
    /// one more for the part being checked; never more than the downloads, never below one.
    pub fn whole_parts(&self) -> usize {
        ((self.stored() + self.content()).saturating_sub(1) / 2).clamp(1, self.downloads.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_of_the_local_size_get_every_download_and_a_decoder_per_core() {
        let buffers = RestoreBuffers::plan(4, 2, 2 * MIB);
        assert_eq!(buffers, RestoreBuffers { downloads: 4, decoders: 2 });
        assert_eq!((buffers.stored(), buffers.content()), (6, 3));
        // Smaller parts than the unit are planned as the unit: nothing grows past the defaults.
        assert_eq!(RestoreBuffers::plan(4, 2, 100), buffers);
        assert_eq!(RestoreBuffers::plan(4, 8, 2 * MIB), RestoreBuffers { downloads: 4, decoders: 4 });
    }

    #[test]
    fn larger_parts_get_fewer_buffers_within_the_budget() {
        for part in [3 * MIB, 4 * MIB, 5 * MIB, 8 * MIB, 16 * MIB, 64 * MIB] {
            for (concurrency, cores) in [(1, 1), (4, 2), (4, 8), (16, 2), (64, 64)] {
                let buffers = RestoreBuffers::plan(concurrency, cores, part);
                assert!(buffers.downloads >= 1 && buffers.decoders >= 1, "{part} {concurrency} {cores}: {buffers:?}");
                assert!(buffers.downloads <= concurrency && buffers.decoders <= cores.min(concurrency));
                let bytes = buffers.bytes(part);
                // Never more than the full pipeline at the unit size; very large parts still get
                // one of each (4 buffers).
                let full = RestoreBuffers::plan(concurrency, cores, 2 * MIB).bytes(2 * MIB);
                let bound = RESTORE_BUFFER_BUDGET.max(full).max(4 * part);
                assert!(bytes <= bound, "{part} {concurrency} {cores}: {bytes} > {bound}");
            }
        }
        assert_eq!(RestoreBuffers::plan(4, 2, 4 * MIB), RestoreBuffers { downloads: 4, decoders: 1 });
        assert_eq!(RestoreBuffers::plan(4, 2, 8 * MIB), RestoreBuffers { downloads: 1, decoders: 1 });
        // Many cores and downloads: decoders go first.
        let wide = RestoreBuffers::plan(64, 64, 4 * MIB);
        assert_eq!(wide.downloads, 64, "{wide:?}");
        assert!(wide.decoders < 64 && wide.bytes(4 * MIB) <= RestoreBuffers::plan(64, 64, 2 * MIB).bytes(2 * MIB));
    }

    #[test]
    fn whole_parts_fit_the_same_buffers() {
        // At the unit size and the default concurrency, every download; at a high concurrency,
        // what a restore's 21 buffers hold.
        assert_eq!(RestoreBuffers::plan(4, 2, 2 * MIB).whole_parts(), 4);
        assert_eq!(RestoreBuffers::plan(16, 2, 2 * MIB).whole_parts(), 10);
        assert_eq!(RestoreBuffers::plan(4, 2, 4 * MIB).whole_parts(), 3);
        assert_eq!(RestoreBuffers::plan(4, 2, 8 * MIB).whole_parts(), 1);
        for part in [2 * MIB, 4 * MIB, 8 * MIB, 64 * MIB] {
            for (concurrency, cores) in [(1, 1), (4, 2), (16, 2), (64, 64)] {
                let buffers = RestoreBuffers::plan(concurrency, cores, part);
                let whole = buffers.whole_parts();
                assert!(whole >= 1 && whole <= concurrency, "{part} {concurrency} {cores}: {whole}");
                // Two buffers per part in flight and one being checked, within the plan's bytes
                // (one part in flight always, even when the plan holds fewer than three buffers).
                let held = (2 * whole as u64 + 1) * part;
                assert!(held <= buffers.bytes(part).max(3 * part), "{part} {concurrency} {cores}: {held}");
            }
        }
    }

    #[test]
    fn a_concurrency_of_one_is_kept() {
        assert_eq!(RestoreBuffers::plan(1, 2, 2 * MIB), RestoreBuffers { downloads: 1, decoders: 1 });
        assert_eq!(RestoreBuffers::plan(0, 2, 2 * MIB), RestoreBuffers { downloads: 1, decoders: 1 });
    }
}
