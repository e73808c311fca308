package config

import (
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// A leaf is one settable value of Config, named by its dotted YAML path
// ("limits.max_txn_ops"). The YAML, environment and flag layers all set
// leaves through the same parser, so "256MiB" or "1h" mean the same thing
// wherever they are written, and a field added to Config is reachable from
// YAML and the environment without further code.
type leaf struct {
	key   string       // dotted YAML path
	index []int        // reflect field index path from Config
	typ   reflect.Type // the field's type
	bytes bool         // an integer that accepts size units (`unit:"bytes"`)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	leaves       = collectLeaves(reflect.TypeFor[Config](), "", nil)
	leafByKey    = indexLeaves(leaves)
)

func collectLeaves(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		if isStructList(f.Type) {
			continue // policies, tenants: YAML only (see structlist.go)
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, collectLeaves(f.Type, prefix+name+".", idx)...)
			continue
		}
		out = append(out, leaf{key: prefix + name, index: idx, typ: f.Type, bytes: f.Tag.Get("unit") == "bytes"})
	}
	return out
}

func indexLeaves(ls []leaf) map[string]*leaf {
	m := make(map[string]*leaf, len(ls))
	for i := range ls {
		m[ls[i].key] = &ls[i]
	}
	return m
}

// yamlName returns the YAML key of an exported field, or "" when the field
// is not part of the file format.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

// envName is the METASTORE_* environment variable of a leaf:
// "limits.max_txn_ops" → METASTORE_LIMITS_MAX_TXN_OPS.
func envName(key string) string {
	return "METASTORE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func (l *leaf) value(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(l.index)
}

// set parses s and stores it in c. The error says what is wrong with s but
// not where it came from; callers prefix the key, variable or flag.
func (l *leaf) set(c *Config, s string) error {
	return setValue(l.value(c), s, l.bytes)
}

// setValue parses s into v by v's type (bytes: an integer that accepts size
// units).
func setValue(v reflect.Value, s string, bytes bool) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid duration %q (want a Go duration such as 100ms, 5s, 1h30m)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch typ := v.Type(); typ.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if typ.Elem().Kind() != reflect.String {
			panic("config: unsupported slice type " + typ.String())
		}
		v.Set(reflect.ValueOf(splitList(s)))
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := parseInt(s, typ.Bits(), bytes)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := parseInt(s, 64, bytes)
		if err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("must be >= 0, got %d", n)
		}
		if typ.Bits() < 64 && uint64(n) > uint64(1)<<typ.Bits()-1 {
			return fmt.Errorf("%d is out of range (max %d)", n, uint64(1)<<typ.Bits()-1)
		}
		v.SetUint(uint64(n))
	default:
		panic("config: unsupported field type " + typ.String())
	}
	return nil
}

// format renders the leaf's value in c in the syntax set accepts.
func (l *leaf) format(c *Config) string {
	v := l.value(c)
	if l.typ == durationType {
		return time.Duration(v.Int()).String()
	}
	switch l.typ.Kind() {
	case reflect.Slice:
		return strings.Join(v.Interface().([]string), ",")
	default:
		return fmt.Sprint(v.Interface())
	}
}

// splitList splits a comma-separated list as etcd does for URL flags,
// dropping blanks so "a, b," is [a b].
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// sizeUnits are the suffixes a byte size may carry; IEC units are powers of
// two, SI units powers of ten, so "1.5MiB" is exactly etcd's 1572864.
var sizeUnits = map[string]int64{
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// parseInt parses a signed integer of the given bit size. With bytes set it
// also accepts a decimal number followed by a size unit ("256MiB", "1.5GB")
// as long as the result is a whole number of bytes. Negative values parse so
// that Validate, not the parser, reports "must be > 0, got -1".
func parseInt(s string, bits int, bytes bool) (int64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, bits); err == nil {
		return n, nil
	} else if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return 0, fmt.Errorf("%s is out of range for a %d-bit integer", s, bits)
	}
	if !bytes {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	num := strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
	unit := strings.ToLower(strings.TrimSpace(s[len(num):]))
	mult, ok := sizeUnits[unit]
	num = strings.TrimSpace(num)
	r, okNum := new(big.Rat).SetString(num)
	// NB: big.Rat also accepts "1/2" and exponents; only plain decimals are sizes.
	if !ok || !okNum || num == "" || strings.ContainsAny(num, "/eE") {
		return 0, fmt.Errorf("invalid size %q (want bytes, or a number with a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	n := r.Num()
	limit := big.NewInt(math.MaxInt64)
	limit.Rsh(limit, uint(64-bits))
	if n.CmpAbs(limit) > 0 {
		return 0, fmt.Errorf("size %s is out of range (max %d bytes)", s, limit)
	}
	return n.Int64(), nil
}
