//! The structural trace behind type fingerprints.
//!
//! # Why not serde-reflection
//!
//! serde-reflection explores every variant of the *outer* enum, but an enum
//! nested in one of its variants only as often as that variant happens to be
//! visited (about twice): a field changed in the third variant of a nested
//! enum went unnoticed (tests/it/channel.rs pins it). serde's visitor model
//! only lets one deserialization pick one variant, so exploring every variant
//! at every depth takes many passes that steer each enum to a different
//! variant each time. That is what this does.
//!
//! # How
//!
//! [`trace`] deserializes `T` from a [`Tracer`] again and again. Each enum has a
//! cursor that moves to its next variant every time the enum is met, so the
//! outer enum cycles through its variants and every nested enum is met, and
//! cycled, whenever a path to it is taken. Each pass records, per enum, the
//! shape of the variant it took: field names and types, with nested enums as
//! references by name (so a variant's shape does not depend on which variants
//! its nested enums took). Passes stop once every enum met has every variant
//! recorded. The result, the outer shape plus every enum's variant names and
//! variant shapes, sorted, is a deterministic function of the type's structure.
//!
//! Types that need `deserialize_any` (untagged or flattened serde
//! representations) cannot be traced: [`trace`] returns `None` and the caller
//! falls back to the type's name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Most passes before giving up on completeness (what was explored still
/// counts, and is the same on both sides).
const MAX_PASSES: usize = 20_000;
/// Deepest nesting followed (recursive types).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Default)]
struct EnumInfo {
    variants: &'static [&'static str],
    cursor: usize,
    explored: BTreeMap<usize, String>,
}

/// Records shapes while deserializing.
#[derive(Debug, Default)]
struct Tracer {
    enums: BTreeMap<&'static str, EnumInfo>,
    /// Text of what is being deserialized, innermost last.
    stack: Vec<String>,
    depth: usize,
}

#[derive(Debug)]
struct Unsupported(String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, Unsupported>;

/// The canonical structure text of `T`, or `None` if it cannot be traced.
pub(crate) fn trace<T: de::DeserializeOwned>() -> Option<String> {
    let mut tracer = Tracer::default();
    let mut top = None;
    for _ in 0..MAX_PASSES {
        tracer.stack = vec![String::new()];
        tracer.depth = 0;
        T::deserialize(&mut tracer).ok()?;
        let text = tracer.stack.pop().unwrap_or_default();
        top.get_or_insert(text);
        let complete = tracer
            .enums
            .values()
            .all(|e| e.explored.len() == e.variants.len());
        if complete {
            break;
        }
    }
    let mut out = top?;
    for (name, info) in &tracer.enums {
        let _ = write!(out, "\nenum {name} {:?}", info.variants);
        for (i, shape) in &info.explored {
            let _ = write!(out, "\n  {i} {}: {shape}", info.variants[*i]);
        }
    }
    Some(out)
}

impl Tracer {
    fn emit(&mut self, s: &str) {
        if let Some(top) = self.stack.last_mut() {
            top.push_str(s);
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Unsupported("nesting too deep to trace".into()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

macro_rules! primitive {
    ($($method:ident => $visit:ident($($value:expr)?), $name:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
                self.emit($name);
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut Tracer {
    type Error = Unsupported;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Unsupported("deserialize_any".into()))
    }

    primitive! {
        deserialize_bool => visit_bool(false), "bool";
        deserialize_i8 => visit_i8(0), "i8";
        deserialize_i16 => visit_i16(0), "i16";
        deserialize_i32 => visit_i32(0), "i32";
        deserialize_i64 => visit_i64(0), "i64";
        deserialize_i128 => visit_i128(0), "i128";
        deserialize_u8 => visit_u8(0), "u8";
        deserialize_u16 => visit_u16(0), "u16";
        deserialize_u32 => visit_u32(0), "u32";
        deserialize_u64 => visit_u64(0), "u64";
        deserialize_u128 => visit_u128(0), "u128";
        deserialize_f32 => visit_f32(0.0), "f32";
        deserialize_f64 => visit_f64(0.0), "f64";
        deserialize_char => visit_char('\0'), "char";
        deserialize_str => visit_str(""), "str";
        deserialize_string => visit_string(String::new()), "str";
        deserialize_bytes => visit_bytes(&[]), "bytes";
        deserialize_byte_buf => visit_byte_buf(Vec::new()), "bytes";
        deserialize_unit => visit_unit(), "()";
        deserialize_identifier => visit_u32(0), "id";
        deserialize_ignored_any => visit_unit(), "_";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        self.emit("Option<");
        let v = visitor.visit_some(&mut *self)?;
        self.emit(">");
        self.leave();
        Ok(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.emit(name);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        self.emit(name);
        self.emit("(");
        let v = visitor.visit_newtype_struct(&mut *self)?;
        self.emit(")");
        self.leave();
        Ok(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        self.emit("[");
        let v = visitor.visit_seq(Elements {
            tracer: &mut *self,
            left: 1,
            fields: &[],
        })?;
        self.emit("]");
        self.leave();
        Ok(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.enter()?;
        self.emit("(");
        let v = visitor.visit_seq(Elements {
            tracer: &mut *self,
            left: len,
            fields: &[],
        })?;
        self.emit(")");
        self.leave();
        Ok(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.emit(name);
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.enter()?;
        self.emit("{");
        let v = visitor.visit_map(Entries {
            tracer: &mut *self,
            left: 1,
        })?;
        self.emit("}");
        self.leave();
        Ok(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.enter()?;
        self.emit(name);
        self.emit("{");
        let v = visitor.visit_seq(Elements {
            tracer: &mut *self,
            left: fields.len(),
            fields,
        })?;
        self.emit("}");
        self.leave();
        Ok(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if variants.is_empty() {
            return Err(Unsupported("an enum with no variants".into()));
        }
        self.enter()?;
        self.emit("enum ");
        self.emit(name);
        let info = self.enums.entry(name).or_default();
        info.variants = variants;
        let index = info.cursor % variants.len();
        info.cursor += 1;
        // The variant's content is recorded on its own, with nested enums as
        // references, then filed under the enum.
        self.stack.push(String::new());
        let v = visitor.visit_enum(Variant {
            tracer: &mut *self,
            index,
        })?;
        let shape = self.stack.pop().unwrap_or_default();
        if let Some(info) = self.enums.get_mut(name) {
            info.explored.entry(index).or_insert(shape);
        }
        self.leave();
        Ok(v)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A sequence of `left` elements (named by `fields`, for structs).
struct Elements<'a> {
    tracer: &'a mut Tracer,
    left: usize,
    fields: &'static [&'static str],
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = Unsupported;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        let i = self.fields.len().saturating_sub(self.left);
        self.left -= 1;
        if let Some(field) = self.fields.get(i) {
            self.tracer.emit(field);
            self.tracer.emit(":");
        }
        let v = seed.deserialize(&mut *self.tracer)?;
        self.tracer.emit(",");
        Ok(Some(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A map of one entry.
struct Entries<'a> {
    tracer: &'a mut Tracer,
    left: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let k = seed.deserialize(&mut *self.tracer)?;
        self.tracer.emit("=>");
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.tracer)
    }
}

/// The variant the cursor chose.
struct Variant<'a> {
    tracer: &'a mut Tracer,
    index: usize,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self)> {
        let index =
            u32::try_from(self.index).map_err(|_| Unsupported("too many variants".into()))?;
        let id = seed.deserialize(IntoDeserializer::<Unsupported>::into_deserializer(index))?;
        Ok((id, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<()> {
        self.tracer.emit("unit");
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value> {
        seed.deserialize(&mut *self.tracer)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(&mut *self.tracer, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.tracer.emit("{");
        let v = visitor.visit_seq(Elements {
            tracer: &mut *self.tracer,
            left: fields.len(),
            fields,
        })?;
        self.tracer.emit("}");
        Ok(v)
    }
}
