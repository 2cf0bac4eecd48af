// Stream harness for a CXXRTL-compiled axsa design (see axsa/sim/cxxrtl.py).
//
// Compiled with the design's `write_cxxrtl` output into one shared library and driven
// from Python through ctypes. The whole feed/drain loop of a run stays in C++: Python
// hands over every feed's payload words and gets every drain's words back, once per run.
// The loop is the one of the Verilator harness (stream_run.h, beside this file), with the
// timing documented in axsa/sim/engine.py (same as the pysim engine).
//
// Objects are reached through the CXXRTL C API (cxxrtl_get), so the harness is the same
// for every design.

#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "stream_run.h"

extern "C" cxxrtl_toplevel cxxrtl_design_create();

namespace {

size_t chunks(const cxxrtl_object *obj) {
	return (obj->width + 31) / 32;
}

struct Sim {
	cxxrtl_handle handle = nullptr;
	cxxrtl_object *clk = nullptr;
	cxxrtl_vcd vcd = nullptr;
	FILE *vcd_file = nullptr;
	uint64_t vcd_time = 0;
	uint64_t deltas = 0;  // evaluation passes in runs (2 per cycle when nothing loops)
	std::string error;

	// the model adapter of axsa::run_streams (stream_run.h)
	using Port = cxxrtl_object;

	// A port object by name, or nullptr (and an error message) if absent.
	Port *lookup(const char *name) {
		cxxrtl_object *obj = cxxrtl_get(handle, name);
		if (obj == nullptr)
			error = std::string("no object named '") + name + "' in the compiled design";
		return obj;
	}

	void vcd_sample() {
		if (vcd == nullptr)
			return;
		cxxrtl_vcd_sample(vcd, vcd_time);
		vcd_time += 5;
		const char *data;
		size_t size;
		cxxrtl_vcd_read(vcd, &data, &size);
		while (size > 0) {
			fwrite(data, 1, size, vcd_file);
			cxxrtl_vcd_read(vcd, &data, &size);
		}
	}

	void settle() {
		deltas += cxxrtl_step(handle);
		vcd_sample();
	}

	static size_t words(const Port *obj) {
		return chunks(obj);
	}

	static void set_bit(Port *obj, bool value) {
		if (obj != nullptr && obj->next != nullptr)
			obj->next[0] = value ? 1u : 0u;
	}

	static bool get_bit(const Port *obj) {
		return obj == nullptr ? true : (obj->curr[0] & 1u) != 0;  // absent = constant 1
	}

	static void put(Port *obj, const uint32_t *words) {
		memcpy(obj->next, words, chunks(obj) * sizeof(uint32_t));
	}

	static void get(const Port *obj, uint32_t *words) {
		memcpy(words, obj->curr, chunks(obj) * sizeof(uint32_t));
	}
};

}  // namespace

extern "C" {

// A fresh design instance in its initial state. `clk` names the clock port ("" if none).
void *axsa_create(const char *clk) {
	Sim *sim = new Sim;
	sim->handle = cxxrtl_create(cxxrtl_design_create());
	if (clk[0] != '\0')
		sim->clk = cxxrtl_get(sim->handle, clk);
	cxxrtl_step(sim->handle);  // settle combinational logic of the initial state
	return sim;
}

void axsa_destroy(void *p) {
	Sim *sim = static_cast<Sim *>(p);
	if (sim->vcd != nullptr) {
		sim->vcd_sample();
		cxxrtl_vcd_destroy(sim->vcd);
		fclose(sim->vcd_file);
	}
	cxxrtl_destroy(sim->handle);
	delete sim;
}

uint64_t axsa_deltas(void *p) {
	return static_cast<Sim *>(p)->deltas;
}

const char *axsa_error(void *p) {
	return static_cast<Sim *>(p)->error.c_str();
}

// Back to the initial state (every wire and memory to its init value).
void axsa_reset(void *p) {
	Sim *sim = static_cast<Sim *>(p);
	cxxrtl_reset(sim->handle);
	cxxrtl_step(sim->handle);
}

// Width of port `name`, or -1 (see axsa_error) if it does not exist.
int64_t axsa_width(void *p, const char *name) {
	Sim *sim = static_cast<Sim *>(p);
	cxxrtl_object *obj = sim->lookup(name);
	return obj == nullptr ? -1 : (int64_t)obj->width;
}

// Drive input `name` with `words` (ceil(width/32) chunks); it holds until changed.
int axsa_set(void *p, const char *name, const uint32_t *words) {
	Sim *sim = static_cast<Sim *>(p);
	cxxrtl_object *obj = sim->lookup(name);
	if (obj == nullptr)
		return -1;
	if (obj->next == nullptr) {
		sim->error = std::string("object '") + name + "' cannot be driven";
		return -1;
	}
	memcpy(obj->next, words, chunks(obj) * sizeof(uint32_t));
	return 0;
}

// Settle, then read `name` into `words`.
int axsa_get(void *p, const char *name, uint32_t *words) {
	Sim *sim = static_cast<Sim *>(p);
	cxxrtl_object *obj = sim->lookup(name);
	if (obj == nullptr)
		return -1;
	cxxrtl_step(sim->handle);
	memcpy(words, obj->curr, chunks(obj) * sizeof(uint32_t));
	return 0;
}

// Start writing every non-memory signal to a VCD file (5 ns per half clock period).
int axsa_vcd_open(void *p, const char *path) {
	Sim *sim = static_cast<Sim *>(p);
	sim->vcd_file = fopen(path, "wb");
	if (sim->vcd_file == nullptr) {
		sim->error = std::string("cannot open VCD file '") + path + "' for writing";
		return -1;
	}
	sim->vcd = cxxrtl_vcd_create();
	cxxrtl_vcd_timescale(sim->vcd, 1, "ns");
	cxxrtl_vcd_add_from_without_memories(sim->vcd, sim->handle);
	sim->vcd_sample();
	return 0;
}

// One run (axsa::run_streams, stream_run.h).
int64_t axsa_run(void *p, int n_feeds, int n_drains, const char *const *names,
                 const int64_t *counts, uint32_t *const *data, int64_t *done,
                 int64_t max_cycles) {
	return axsa::run_streams(*static_cast<Sim *>(p), n_feeds, n_drains, names, counts, data,
	                         done, max_cycles);
}

}  // extern "C"
