// Stream harness for a Verilator-compiled axsa design (see axsa/sim/verilator.py).
//
// Verilated together with the design (`verilator --cc --exe`) into one shared library,
// driven from Python through ctypes like the CXXRTL harness. The whole feed/drain loop of
// a run stays in C++: the one of the CXXRTL harness (stream_run.h, beside this file), with
// the timing documented in axsa/sim/engine.py.
//
// The design's ports are listed by the generated `axsa_ports.inc` (one
// AXSA_PORT(rtl_name, member, width) per port); the multiplier cells filled by product
// tables are DPI-C functions (generated `axsa_cells.cc`) reading the table of the
// instance being evaluated (`axsa_current_tables`, set under the library's lock).

#include "Vtop.h"
#include "verilated.h"
#ifdef AXSA_TRACE
#include "verilated_vcd_c.h"
#endif

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "stream_run.h"

// tables of the instance being evaluated (read by the DPI lookups of axsa_cells.cc)
const uint32_t *const *axsa_current_tables = nullptr;

namespace {

std::mutex eval_lock;  // one library, one set of global table pointers: one eval at a time

struct Port {
	std::string name;
	void *data;
	int width;
	size_t bytes;  // storage: 1, 2, 4, 8 bytes, or 4 per 32-bit word above 64 bits
};

size_t storage_bytes(int width) {
	if (width <= 8)
		return 1;
	if (width <= 16)
		return 2;
	if (width <= 32)
		return 4;
	if (width <= 64)
		return 8;
	return 4 * (size_t)((width + 31) / 32);
}

template <typename T>
void *storage(T &member) {
	return &member;
}

template <std::size_t N>
void *storage(VlWide<N> &member) {
	return member.data();
}

struct Sim {
	using Port = ::Port;  // the model adapter of axsa::run_streams (stream_run.h)
	std::unique_ptr<VerilatedContext> context;
	std::unique_ptr<Vtop> top;
	std::vector<Port> ports;
	std::vector<const uint32_t *> tables;
	Port *clk = nullptr;
#ifdef AXSA_TRACE
	std::unique_ptr<VerilatedVcdC> vcd;
#endif
	uint64_t time = 0;
	std::string error;

	void create() {
		top.reset();  // the model goes before its context
		context.reset(new VerilatedContext);
#ifdef AXSA_TRACE
		context->traceEverOn(true);
#endif
		top.reset(new Vtop(context.get(), "top"));
		ports.clear();
#define AXSA_PORT(rtl_name, member, width) \
	ports.push_back({rtl_name, storage(top->member), width, storage_bytes(width)});
#include "axsa_ports.inc"
#undef AXSA_PORT
		clk = find("clk");
	}

	Port *find(const char *name) {
		for (Port &p : ports)
			if (p.name == name)
				return &p;
		return nullptr;
	}

	Port *lookup(const char *name) {
		Port *p = find(name);
		if (p == nullptr)
			error = std::string("no port named '") + name + "' in the compiled design";
		return p;
	}

	// the rest of the model adapter
	void settle() {
		top->eval();
#ifdef AXSA_TRACE
		if (vcd) {
			vcd->dump(time);
			time += 5;
		}
#endif
	}

	static size_t words(const Port *p) {
		return (size_t)((p->width + 31) / 32);
	}

	static void set_bit(Port *p, bool value) {
		if (p != nullptr)
			*static_cast<uint8_t *>(p->data) = value ? 1 : 0;
	}

	static bool get_bit(const Port *p) {  // absent = constant 1
		return p == nullptr ? true : (*static_cast<const uint8_t *>(p->data) & 1) != 0;
	}

	// payload words (little-endian uint32) <-> port storage (little-endian, `bytes` long)
	static void put(Port *p, const uint32_t *in) {
		memcpy(p->data, in, p->bytes);
	}

	static void get(const Port *p, uint32_t *out) {
		size_t n = 4 * words(p);
		if (p->bytes < n)
			memset(out, 0, n);
		memcpy(out, p->data, p->bytes);
	}
};

struct Guard {  // the library's lock, this instance's tables current
	std::lock_guard<std::mutex> hold;
	explicit Guard(Sim *sim) : hold(eval_lock) {
		axsa_current_tables = sim->tables.data();
	}
};

}  // namespace

extern "C" {

// A fresh design instance in its initial state; `tables[i]` is the product table of
// multiplier cell slot i (kept by the caller for the instance's lifetime).
void *axsa_create(int n_tables, const uint32_t *const *tables) {
	Sim *sim = new Sim;
	sim->tables.assign(tables, tables + n_tables);
	Guard guard(sim);
	sim->create();
	sim->top->eval();  // settle the initial state
	return sim;
}

void axsa_destroy(void *p) {
	Sim *sim = static_cast<Sim *>(p);
	{
		Guard guard(sim);
#ifdef AXSA_TRACE
		if (sim->vcd) {
			sim->vcd->dump(sim->time);
			sim->vcd->close();
		}
#endif
		sim->top->final();
	}
	delete sim;
}

const char *axsa_error(void *p) {
	return static_cast<Sim *>(p)->error.c_str();
}

// Back to the initial state: a fresh model (every register and memory to its init value).
void axsa_reset(void *p) {
	Sim *sim = static_cast<Sim *>(p);
	Guard guard(sim);
	sim->top->final();
	sim->create();
	sim->top->eval();
}

// Width of port `name`, or -1 (see axsa_error).
int64_t axsa_width(void *p, const char *name) {
	Sim *sim = static_cast<Sim *>(p);
	Port *port = sim->lookup(name);
	return port == nullptr ? -1 : port->width;
}

// Drive input `name` with `words` (ceil(width/32) chunks); it holds until changed.
int axsa_set(void *p, const char *name, const uint32_t *words) {
	Sim *sim = static_cast<Sim *>(p);
	Port *port = sim->lookup(name);
	if (port == nullptr)
		return -1;
	Sim::put(port, words);
	return 0;
}

// Settle, then read `name` into `words`.
int axsa_get(void *p, const char *name, uint32_t *words) {
	Sim *sim = static_cast<Sim *>(p);
	Port *port = sim->lookup(name);
	if (port == nullptr)
		return -1;
	Guard guard(sim);
	sim->top->eval();
	Sim::get(port, words);
	return 0;
}

// Write a VCD file of every signal (5 ns per half clock period); -1 if the library was
// built without tracing or the file does not open.
int axsa_vcd_open(void *p, const char *path) {
	Sim *sim = static_cast<Sim *>(p);
#ifdef AXSA_TRACE
	Guard guard(sim);
	sim->vcd.reset(new VerilatedVcdC);
	sim->top->trace(sim->vcd.get(), 99);
	sim->vcd->set_time_unit("1ns");
	sim->vcd->set_time_resolution("1ns");
	sim->vcd->open(path);
	if (!sim->vcd->isOpen()) {
		sim->vcd.reset();
		sim->error = std::string("cannot open VCD file '") + path + "' for writing";
		return -1;
	}
	sim->vcd->dump(sim->time);
	sim->time += 5;
	return 0;
#else
	(void)path;
	sim->error = "the design was compiled without tracing";
	return -1;
#endif
}

// One run (axsa::run_streams, stream_run.h), the tables of this instance current.
int64_t axsa_run(void *p, int n_feeds, int n_drains, const char *const *names,
                 const int64_t *counts, uint32_t *const *data, int64_t *done,
                 int64_t max_cycles) {
	Sim *sim = static_cast<Sim *>(p);
	Guard guard(sim);
	return axsa::run_streams(*sim, n_feeds, n_drains, names, counts, data, done, max_cycles);
}

}  // extern "C"
