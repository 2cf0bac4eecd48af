// Stream harness for a CXXRTL-compiled axsa design (see axsa/sim/cxxrtl.py).
//
// Compiled with the design's `write_cxxrtl` output into one shared library and driven
// from Python through ctypes. The whole feed/drain loop of a run stays in C++: Python
// hands over every feed's payload words and gets every drain's words back, once per run.
// The timing is the one documented in axsa/sim/engine.py (same as the pysim engine):
//   clock low:  present feed items (valid=1 until accepted) and drain readiness, settle,
//               sample valid & ready;
//   clock high: the edge; sampled transfers take effect; one cycle counted.
//
// Objects are reached through the CXXRTL C API (cxxrtl_get), so the harness is the same
// for every design.

#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

namespace {

struct Sim {
	cxxrtl_handle handle = nullptr;
	cxxrtl_object *clk = nullptr;
	cxxrtl_vcd vcd = nullptr;
	FILE *vcd_file = nullptr;
	uint64_t vcd_time = 0;
	uint64_t deltas = 0;  // evaluation passes in runs (2 per cycle when nothing loops)
	std::string error;
};

size_t chunks(const cxxrtl_object *obj) {
	return (obj->width + 31) / 32;
}

// A port object by name, or nullptr (and an error message) if absent or not a port.
cxxrtl_object *lookup(Sim *sim, const char *name) {
	cxxrtl_object *obj = cxxrtl_get(sim->handle, name);
	if (obj == nullptr) {
		sim->error = std::string("no object named '") + name + "' in the compiled design";
		return nullptr;
	}
	return obj;
}

void set_bit(cxxrtl_object *obj, bool value) {
	if (obj != nullptr && obj->next != nullptr)
		obj->next[0] = value ? 1u : 0u;
}

bool get_bit(const cxxrtl_object *obj) {
	return obj == nullptr ? true : (obj->curr[0] & 1u) != 0;  // absent = constant 1
}

void vcd_sample(Sim *sim) {
	if (sim->vcd == nullptr)
		return;
	cxxrtl_vcd_sample(sim->vcd, sim->vcd_time);
	sim->vcd_time += 5;
	const char *data;
	size_t size;
	cxxrtl_vcd_read(sim->vcd, &data, &size);
	while (size > 0) {
		fwrite(data, 1, size, sim->vcd_file);
		cxxrtl_vcd_read(sim->vcd, &data, &size);
	}
}

void step(Sim *sim) {
	sim->deltas += cxxrtl_step(sim->handle);
	vcd_sample(sim);
}

struct Stream {
	cxxrtl_object *valid, *ready, *payload;
	size_t words;
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
		vcd_sample(sim);
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
	cxxrtl_object *obj = lookup(sim, name);
	return obj == nullptr ? -1 : (int64_t)obj->width;
}

// Drive input `name` with `words` (ceil(width/32) chunks); it holds until changed.
int axsa_set(void *p, const char *name, const uint32_t *words) {
	Sim *sim = static_cast<Sim *>(p);
	cxxrtl_object *obj = lookup(sim, name);
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
	cxxrtl_object *obj = lookup(sim, name);
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
	vcd_sample(sim);
	return 0;
}

// One run. Stream i is given by names[3i .. 3i+2] = valid, ready, payload ("" = constant 1
// for valid/ready). Feeds come first (n_feeds of them), then drains. counts[i] is the
// number of items, data[i] the payload words (ceil(width/32) per item), done[i] returns
// the items transferred. Returns the cycle count, -1 on timeout, -2 on a bad name.
int64_t axsa_run(void *p, int n_feeds, int n_drains, const char *const *names,
                 const int64_t *counts, uint32_t *const *data, int64_t *done,
                 int64_t max_cycles) {
	Sim *sim = static_cast<Sim *>(p);
	int n = n_feeds + n_drains;
	std::vector<Stream> streams(n);
	for (int i = 0; i < n; i++) {
		cxxrtl_object *objs[3] = {nullptr, nullptr, nullptr};
		for (int j = 0; j < 3; j++) {
			if (names[3 * i + j][0] == '\0')
				continue;
			objs[j] = lookup(sim, names[3 * i + j]);
			if (objs[j] == nullptr)
				return -2;
		}
		streams[i] = {objs[0], objs[1], objs[2], objs[2] ? chunks(objs[2]) : 0};
		done[i] = 0;
	}
	int64_t remaining = 0;  // items still to transfer on the streams that end the run
	for (int i = (n_drains > 0 ? n_feeds : 0); i < n; i++)
		remaining += counts[i];
	std::vector<char> fire(n);
	int64_t cycles = 0;
	while (remaining > 0) {
		if (cycles >= max_cycles) {
			cycles = -1;
			break;
		}
		set_bit(sim->clk, false);
		for (int i = 0; i < n_feeds; i++) {
			Stream &s = streams[i];
			bool have = done[i] < counts[i];
			if (have && s.words)
				memcpy(s.payload->next, data[i] + done[i] * s.words, s.words * sizeof(uint32_t));
			set_bit(s.valid, have);
		}
		for (int i = n_feeds; i < n; i++)
			set_bit(streams[i].ready, done[i] < counts[i]);
		step(sim);
		for (int i = 0; i < n_feeds; i++)
			fire[i] = done[i] < counts[i] && get_bit(streams[i].ready);
		for (int i = n_feeds; i < n; i++) {
			Stream &s = streams[i];
			fire[i] = done[i] < counts[i] && get_bit(s.valid);
			if (fire[i] && s.words)
				memcpy(data[i] + done[i] * s.words, s.payload->curr, s.words * sizeof(uint32_t));
		}
		set_bit(sim->clk, true);
		step(sim);
		cycles++;
		for (int i = 0; i < n; i++) {
			if (fire[i]) {
				done[i]++;
				if (n_drains == 0 || i >= n_feeds)
					remaining--;
			}
		}
	}
	// idle the streams between runs
	set_bit(sim->clk, false);
	for (int i = 0; i < n_feeds; i++)
		set_bit(streams[i].valid, false);
	for (int i = n_feeds; i < n; i++)
		set_bit(streams[i].ready, false);
	return cycles;
}

}  // extern "C"
