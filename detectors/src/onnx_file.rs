//! Reads the initializers (named constant tensors) of an ONNX model file: just enough of the
//! protobuf wire format to walk `ModelProto.graph.initializer` and decode `TensorProto`s whose
//! data is in `raw_data` (how `onnx.numpy_helper.from_array` writes them).
//!
//! The linear classifier's arithmetic runs in Rust ([`crate::linear`]), on the weights of the
//! very file that ONNX Runtime loads and checks; this module is how Rust gets them.

use std::collections::HashMap;

/// `TensorProto.DataType` values vigil reads.
const FLOAT: u64 = 1;
const FLOAT16: u64 = 10;

// Field numbers (onnx.proto3).
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;

/// A constant tensor of the model, as `f32` (float16 data is widened).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its shape.
    pub dims: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// The model's float initializers by name. Initializers of other types (integer constants of
/// the graph) are skipped.
pub fn float_initializers(model: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let mut tensors = HashMap::new();
    for (field, value) in Fields::new(model) {
        if let (MODEL_GRAPH, Value::Bytes(graph)) = (field?, value) {
            for (field, value) in Fields::new(graph) {
                if let (GRAPH_INITIALIZER, Value::Bytes(tensor)) = (field?, value) {
                    if let Some((name, tensor)) = read_tensor(tensor)? {
                        tensors.insert(name, tensor);
                    }
                }
            }
        }
    }
    Ok(tensors)
}

fn read_tensor(bytes: &[u8]) -> Result<Option<(String, Tensor)>, String> {
    let (mut dims, mut data_type, mut name, mut raw) = (Vec::new(), 0, String::new(), None);
    for (field, value) in Fields::new(bytes) {
        match (field?, value) {
            (TENSOR_DIMS, Value::Varint(d)) => dims.push(d as usize),
            (TENSOR_DIMS, Value::Bytes(packed)) => {
                let mut rest = packed;
                while !rest.is_empty() {
                    let (d, used) = varint(rest).ok_or("a truncated tensor dimension")?;
                    dims.push(d as usize);
                    rest = &rest[used..];
                }
            }
            (TENSOR_DATA_TYPE, Value::Varint(t)) => data_type = t,
            (TENSOR_NAME, Value::Bytes(n)) => {
                name = String::from_utf8(n.to_vec()).map_err(|_| "a tensor name is not UTF-8")?
            }
            (TENSOR_RAW_DATA, Value::Bytes(data)) => raw = Some(data),
            _ => {}
        }
    }
    let values: Vec<f32> = match (data_type, raw) {
        (FLOAT, Some(raw)) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        (FLOAT16, Some(raw)) => raw
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => return Ok(None),
    };
    let expected: usize = dims.iter().product();
    if values.len() != expected {
        return Err(format!(
            "tensor {name:?} holds {} values for shape {dims:?}",
            values.len()
        ));
    }
    Ok(Some((name, Tensor { dims, values })))
}

/// IEEE 754 half precision to single precision (exact: every half is a single).
pub fn f16_to_f32(half: u16) -> f32 {
    let sign = u32::from(half >> 15) << 31;
    let exponent = u32::from((half >> 10) & 0x1f);
    let mantissa = u32::from(half & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise the mantissa.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message: (field number, value), or an error for a malformed one
/// (after which iteration stops).
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let (key, used) = varint(self.rest).ok_or("a truncated field key")?;
        self.rest = &self.rest[used..];
        let field = key >> 3;
        let value = match key & 7 {
            0 => {
                let (v, used) = varint(self.rest).ok_or("a truncated varint")?;
                self.rest = &self.rest[used..];
                Value::Varint(v)
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                self.rest = self.rest.get(width..).ok_or("a truncated fixed field")?;
                Value::Fixed
            }
            2 => {
                let (len, used) = varint(self.rest).ok_or("a truncated length")?;
                let end = used
                    .checked_add(usize::try_from(len).map_err(|_| "a length too large")?)
                    .filter(|&end| end <= self.rest.len())
                    .ok_or("a field longer than its message")?;
                let bytes = &self.rest[used..end];
                self.rest = &self.rest[end..];
                Value::Bytes(bytes)
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (Result<u64, String>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match self.next_field() {
            Ok((field, value)) => Some((Ok(field), value)),
            Err(e) => {
                self.failed = true;
                Some((Err(e), Value::Fixed))
            }
        }
    }
}

/// A base-128 varint and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_widens_exactly() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    /// A hand-encoded model: graph { initializer { dims: [2] data_type: FLOAT16 name: "w"
    /// raw_data: [1.0, -2.0] } initializer { dims: [1] data_type: INT64 name: "i" } }.
    #[test]
    fn reads_float_initializers_and_skips_others() {
        let w = [
            0x08, 0x02, 0x10, 0x0a, 0x42, 0x01, b'w', 0x4a, 0x04, 0x00, 0x3c, 0x00, 0xc0,
        ];
        let i = [0x08, 0x01, 0x10, 0x07, 0x42, 0x01, b'i'];
        let mut graph = vec![0x2a, w.len() as u8];
        graph.extend(w);
        graph.extend([0x2a, i.len() as u8]);
        graph.extend(i);
        let mut model = vec![0x08, 0x09, 0x3a, graph.len() as u8]; // ir_version 9, graph
        model.extend(graph);
        let tensors = float_initializers(&model).unwrap();
        assert_eq!(tensors.len(), 1);
        assert_eq!(
            tensors["w"],
            Tensor {
                dims: vec![2],
                values: vec![1.0, -2.0]
            }
        );
        assert!(float_initializers(&model[..model.len() - 3]).is_err());
    }
}
