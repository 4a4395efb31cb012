//! Holder of the criterion benchmarks in the workspace's top-level `benches/` folder.
//!
//! ```text
//! cargo bench -p legion-bench --bench data_pipeline
//! RAYON_NUM_THREADS=2 cargo bench -p legion-bench --bench model -- tiny
//! python scripts/bench_data_pipeline.py   # the same work in the Python reference path, and the ratio
//! python scripts/bench_model.py --threads 2 # model components vs PyTorch, and the ratios
//! ```
