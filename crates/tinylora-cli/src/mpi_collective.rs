//! The collective operations of a data-parallel run over MPI (`--features mpi`), for the
//! processes `mpirun -np N` or Slurm's `srun` starts; a binary built with the feature also runs
//! as one process without either. Counts the bytes and time of its reductions, for the report.

use std::cell::Cell;
use std::time::Instant;

use anyhow::Context;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use tinylora_train::Collective;

/// MPI's world communicator as a [`Collective`].
pub struct MpiCollective {
    world: SimpleCommunicator,
    /// Bytes each process sent into reductions and broadcasts, and the seconds spent in them
    /// (waiting for the slowest rank included).
    traffic: Cell<(usize, usize, f64)>,
    // finalises MPI when dropped: declared last, dropped last
    _universe: Universe,
}

impl MpiCollective {
    /// Initialise MPI (only the main thread calls it; the SVD threads never do).
    pub fn init() -> anyhow::Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .context("initialising MPI (it was initialised already)")?;
        Ok(MpiCollective {
            world: universe.world(),
            traffic: Cell::new((0, 0, 0.0)),
            _universe: universe,
        })
    }

    /// End every process of the job (MPI_Abort): what a rank does after an error, since the
    /// others would wait for it forever in their next reduction.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// (calls, bytes, seconds) of the collective operations so far.
    pub fn traffic(&self) -> (usize, usize, f64) {
        self.traffic.get()
    }

    fn timed<T>(&self, bytes: usize, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let (calls, b, s) = self.traffic.get();
        self.traffic
            .set((calls + 1, b + bytes, s + start.elapsed().as_secs_f64()));
        out
    }

    fn reduce(&self, x: &mut [f64], op: SystemOperation) {
        let send = x.to_vec();
        self.timed(8 * x.len(), || self.world.all_reduce_into(&send[..], x, op));
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn sum(&self, x: &mut [f64]) {
        self.reduce(x, SystemOperation::sum());
    }
    fn max(&self, x: &mut [f64]) {
        self.reduce(x, SystemOperation::max());
    }
    fn broadcast(&self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        self.timed(8, || root.broadcast_into(&mut len));
        bytes.resize(len as usize, 0);
        self.timed(bytes.len(), || root.broadcast_into(&mut bytes[..]));
    }
}
