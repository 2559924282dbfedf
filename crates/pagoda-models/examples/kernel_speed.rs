//! Micro-benchmark of the f32-activation block kernels: GB/s of weights
//! streamed and GFLOP/s, for decode (1 row) and prefill-sized batches.
//!
//! `cargo run --release -p pagoda-models --example kernel_speed`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pagoda_models::qmatmul::{BlockFormat, QuantMatrix};

fn main() {
    let (rows, cols) = (1536, 576);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("tensor");
    for (format, dtype) in [
        (BlockFormat::Q4_1, GgmlDType::Q4_1),
        (BlockFormat::Q8_0, GgmlDType::Q8_0),
    ] {
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let bytes = q.data().expect("data").into_owned();
        let size = bytes.len();
        let m = QuantMatrix::new(format, rows, cols, bytes).expect("matrix");
        for batch in [1usize, 4, 16, 64] {
            let x: Vec<f32> = (0..batch * cols).map(|i| (i % 13) as f32 * 0.01).collect();
            // The machine is shared: the best of several repetitions.
            let iters = 1000 / batch;
            let _ = m.matmul(&x, batch);
            let mut secs = f64::INFINITY;
            for _ in 0..7 {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(m.matmul(&x, batch));
                }
                secs = secs.min(start.elapsed().as_secs_f64() / iters as f64);
            }
            println!(
                "{format:?} {rows}x{cols} batch {batch:>2}: {:>7.1} us/call, {:>6.1} GB/s weights, {:>6.1} GFLOP/s",
                secs * 1e6,
                size as f64 / secs / 1e9,
                2.0 * (rows * cols * batch) as f64 / secs / 1e9
            );
        }
    }
}
