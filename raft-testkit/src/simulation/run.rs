//! Running a [`Simulation`]: its seeds (on `jobs` threads), shrinking a failure, replays.

use super::*;

impl<T: Target> Simulation<T> {
    /// The configuration of one run of `seed`: drawn from the seed, then the builder's
    /// settings, then the replay's or shrunk run's.
    fn config(&self, run: &Replay) -> SimConfig {
        let mut cfg = SimConfig::random(run.seed, self.nodes);
        if self.lease_reads {
            cfg.force_lease_reads();
        }
        if self.membership {
            cfg.force_membership();
        }
        cfg.broken = self.broken;
        if let Some(ticks) = run.safety_ticks.or(self.safety_ticks) {
            cfg.safety_ticks = ticks;
        }
        cfg.ops_max = run.ops.or(self.ops);
        run.faults.unwrap_or(self.faults).restrict(&mut cfg);
        cfg
    }

    /// Runs one seed (or a shrunk run of it) as a [`Replay`] describes it, such as
    /// [`SeedFailure::replay`]: the same run, so the same trace hash.
    pub fn replay(&self, run: &Replay) -> RunReport {
        self.run_one(run, self.trace)
    }

    fn run_one(&self, run: &Replay, verbose: bool) -> RunReport {
        self.target.run_config(self.config(run), verbose)
    }

    /// Runs every seed (or only the run the replay environment variables describe,
    /// printing its trace) and reports. Each failing seed is shrunk; see
    /// [`SeedFailure`].
    ///
    /// # Panics
    /// If no workload was set.
    pub fn run(self) -> SimulationReport {
        if let Some(replay) = Replay::from_env() {
            let report = self.run_one(&replay, true);
            println!("trace hash: {:016x}", report.trace_hash);
            let failures = report
                .failure
                .clone()
                .map(|failure| self.failed(&replay, &report, failure, None))
                .into_iter()
                .collect();
            return SimulationReport::new(vec![report], failures);
        }
        let count = self.seeds.end.saturating_sub(self.seeds.start);
        let next = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        let reports = Mutex::new(Vec::new());
        let began = Instant::now();
        let work = || loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= count || failed.load(Ordering::Relaxed) >= self.max_failures as u64 {
                return;
            }
            let report = self.replay(&Replay::seed(self.seeds.start + k));
            if report.failure.is_some() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            let done = {
                let mut r = reports.lock().expect("not poisoned");
                r.push(report);
                r.len()
            };
            if self.progress && done % 1000 == 0 {
                eprintln!("{done} seeds in {:.0?}", began.elapsed());
            }
        };
        if self.jobs == 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..self.jobs {
                    s.spawn(work);
                }
            });
        }
        let mut reports = reports.into_inner().expect("not poisoned");
        reports.sort_by_key(|r| r.seed);
        let failures = reports
            .iter()
            .filter_map(|r| {
                let failure = r.failure.clone()?;
                let run = Replay::seed(r.seed);
                let shrunk = if self.shrink {
                    self.shrink_run(&run, r)
                } else {
                    None
                };
                Some(self.failed(&run, r, failure, shrunk))
            })
            .collect();
        SimulationReport::new(reports, failures)
    }

    /// Looks for a smaller failing run of the failing `run` (whose report is `report`):
    /// halves the safety phase while the run still fails; tries it without faults,
    /// else without each fault kind in turn (keeping each drop that still fails); then
    /// halves the client operation budget while it still fails; and again while a pass
    /// shrinks (three passes at most). The smallest failing run found, if smaller than
    /// the original.
    fn shrink_run(&self, run: &Replay, report: &RunReport) -> Option<Shrunk> {
        let mut best: Option<Shrunk> = None;
        let mut current = Replay {
            seed: run.seed,
            safety_ticks: Some(self.config(run).safety_ticks),
            faults: Some(run.faults.unwrap_or(self.faults)),
            ops: run.ops.or(self.ops),
        };
        let mut current_ops = report.ops.writes + report.ops.reads;
        let attempt = |candidate: Replay, best: &mut Option<Shrunk>| -> Option<u64> {
            let r = self.run_one(&candidate, false);
            let failure = r.failure?;
            *best = Some(Shrunk {
                run: candidate,
                failure,
                trace_hash: r.trace_hash,
                ops: r.ops,
            });
            Some(r.ops.writes + r.ops.reads)
        };
        // Each pass can make the next one find more (a run without some fault kind may
        // fail sooner): repeat while a pass shrinks, a few times at most.
        for _pass in 0..3 {
            let before = current.clone();
            // A shorter safety phase.
            while let Some(ticks) = current.safety_ticks.map(|t| t / 2).filter(|t| *t >= 5) {
                let candidate = Replay {
                    safety_ticks: Some(ticks),
                    ..current.clone()
                };
                let Some(ops) = attempt(candidate.clone(), &mut best) else {
                    break;
                };
                current = candidate;
                current_ops = ops;
            }
            // Fewer fault kinds: none at all, else one kind less at a time.
            let faults = current.faults.unwrap_or(self.faults);
            if !faults.is_none() {
                let calm = Replay {
                    faults: Some(Faults::none()),
                    ..current.clone()
                };
                if let Some(ops) = attempt(calm.clone(), &mut best) {
                    current = calm;
                    current_ops = ops;
                } else {
                    for kind in faults.kinds() {
                        let set = current.faults.unwrap_or(self.faults).without(kind);
                        let candidate = Replay {
                            faults: Some(set),
                            ..current.clone()
                        };
                        if let Some(ops) = attempt(candidate.clone(), &mut best) {
                            current = candidate;
                            current_ops = ops;
                        }
                    }
                }
            }
            // Fewer client operations.
            loop {
                let budget = current_ops / 2;
                if budget == 0 {
                    break;
                }
                let candidate = Replay {
                    ops: Some(budget),
                    ..current.clone()
                };
                let Some(ops) = attempt(candidate.clone(), &mut best) else {
                    break;
                };
                current = candidate;
                current_ops = ops;
            }
            if current == before {
                break;
            }
        }
        best
    }

    fn failed(
        &self,
        run: &Replay,
        report: &RunReport,
        failure: Failure,
        shrunk: Option<Shrunk>,
    ) -> SeedFailure {
        let cfg = self.config(run);
        SeedFailure {
            seed: run.seed,
            safety_ticks: cfg.safety_ticks,
            run: Replay {
                seed: run.seed,
                safety_ticks: run.safety_ticks,
                faults: run.faults,
                ops: run.ops,
            },
            trace_hash: report.trace_hash,
            ops: report.ops,
            failure,
            shrunk,
            replay_command: self.replay_command.clone(),
        }
    }
}
