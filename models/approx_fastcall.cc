// approx_matmul's fast path in C++ (`axsa.models._fastcall`): the prepared native kernel
// call for a (table, operands' shapes, strides, dtypes, thread count) found, the int64
// result allocated and the kernel run, in one call from Python.
//
// On a model's small GEMMs (the ts head: 64x32 @ 32x1) the kernel takes about a
// microsecond and the same steps in Python (the key's eight tensor attributes, the
// result tensor, ctypes) took 3.5 more; here, with approx_matmul's own Python, 0.9.
// The kernels themselves stay in approx_kernels.cc (built without torch): an entry holds
// the address of `axsa_approx_gemm` and of the prepared plan, and a reference to the
// Python object that owns the plan, so neither goes away while the entry is kept.
// Every function runs under the GIL but the kernel, which runs without it (as ctypes
// runs it).
#include <torch/python.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace py = pybind11;

namespace {

using Gemm = int (*)(const void* plan, const void* a, const void* b, int64_t* out,
                     int threads);

// operands of more dimensions than this are not kept (the Python path runs them)
constexpr int MAX_DIMS = 8;

// (table key's hash, threads, then per operand: dims, dtype, is_cpu, sizes, strides)
struct Key {
    std::array<int64_t, 2 + 2 * (3 + 2 * MAX_DIMS)> v;
    int n = 0;
    bool operator==(const Key& o) const {
        return n == o.n && std::equal(v.begin(), v.begin() + n, o.v.begin());
    }
};

struct KeyHash {
    size_t operator()(const Key& k) const {
        uint64_t h = 0x243F6A8885A308D3ull;
        for (int i = 0; i < k.n; ++i) {
            h = (h ^ static_cast<uint64_t>(k.v[i])) * 0x9E3779B97F4A7C15ull;
            h ^= h >> 29;
        }
        return static_cast<size_t>(h);
    }
};

struct Entry {
    std::string table;       // the table key itself (the Key holds its hash only)
    py::object owner;        // keeps the plan (and what it points to) alive
    const void* plan;
    Gemm fn;
    std::vector<int64_t> shape;
    bool contiguous;         // the kernel was prepared on contiguous copies
};

// never destroyed: its Python references must not be dropped after the interpreter is
std::unordered_map<Key, Entry, KeyHash>& calls = *new std::unordered_map<Key, Entry, KeyHash>;

// how many calls `run` found (tests: which path a call took)
uint64_t found = 0;

bool add_operand(Key& k, const at::Tensor& t) {
    const int64_t d = t.dim();
    if (d > MAX_DIMS) return false;
    k.v[k.n++] = d;
    k.v[k.n++] = static_cast<int64_t>(t.scalar_type());
    k.v[k.n++] = t.is_cpu();
    for (int64_t s : t.sizes()) k.v[k.n++] = s;
    for (int64_t s : t.strides()) k.v[k.n++] = s;
    return true;
}

// The key of this call, or false when it cannot have one (not a str key, too many dims).
bool make_key(py::handle table, const at::Tensor& a, const at::Tensor& b, int threads,
              Key& k) {
    if (!PyUnicode_Check(table.ptr())) return false;
    const Py_hash_t h = PyObject_Hash(table.ptr());     // cached in the str
    if (h == -1) {
        PyErr_Clear();
        return false;
    }
    k.v[k.n++] = h;
    k.v[k.n++] = threads;
    return add_operand(k, a) && add_operand(k, b);
}

bool same_table(py::handle table, const std::string& kept) {
    Py_ssize_t size = 0;
    const char* s = PyUnicode_AsUTF8AndSize(table.ptr(), &size);
    if (s == nullptr) {
        PyErr_Clear();
        return false;
    }
    return kept.size() == static_cast<size_t>(size) && kept.compare(0, size, s, size) == 0;
}

// The int64 result of the prepared call for these operands; None when none is kept for
// them, or when the kernel refuses a value (the caller then finds and names it).
py::object run(py::handle table, const at::Tensor& a, const at::Tensor& b) {
    const int threads = at::get_num_threads();
    Key k;
    if (!make_key(table, a, b, threads, k)) return py::none();
    auto it = calls.find(k);
    if (it == calls.end() || !same_table(table, it->second.table)) return py::none();
    const Entry& e = it->second;
    ++found;
    py::object owner = e.owner;   // (the entry may be dropped while the GIL is released)
    const void* plan = e.plan;
    const Gemm fn = e.fn;
    const at::Tensor ca = e.contiguous ? a.contiguous() : a;
    const at::Tensor cb = e.contiguous ? b.contiguous() : b;
    at::Tensor out = at::empty(e.shape, at::kLong);
    int bad;
    {
        py::gil_scoped_release unlocked;
        bad = fn(plan, ca.data_ptr(), cb.data_ptr(), out.data_ptr<int64_t>(), threads);
    }
    if (bad) return py::none();
    return py::cast(out);
}

// Keep `owner`'s prepared call (plan and kernel addresses) for these operands at the
// current thread count; emptied first when it holds `limit` entries. False when these
// operands cannot have a key.
bool keep(py::handle table, const at::Tensor& a, const at::Tensor& b, py::object owner,
          uintptr_t plan, uintptr_t fn, std::vector<int64_t> shape, bool contiguous,
          size_t limit) {
    Key k;
    if (!make_key(table, a, b, at::get_num_threads(), k)) return false;
    if (calls.size() >= limit) calls.clear();
    calls[k] = Entry{py::str(table).cast<std::string>(), std::move(owner),
                     reinterpret_cast<const void*>(plan), reinterpret_cast<Gemm>(fn),
                     std::move(shape), contiguous};
    return true;
}

}  // namespace

PYBIND11_MODULE(axsa_fastcall, m) {
    m.doc() = "approx_matmul's fast path: prepared native kernel calls, found and run in C++";
    m.def("run", &run, "The int64 result of the kept call for (table key, a, b), or None.");
    m.def("keep", &keep, "Keep a prepared call for (table key, a, b) at this thread count.");
    m.def("clear", [] { calls.clear(); }, "Drop every kept call.");
    m.def("size", [] { return calls.size(); }, "How many calls are kept.");
    m.def("found", [] { return found; }, "How many calls `run` found kept, so far.");
}
