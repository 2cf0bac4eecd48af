// The stream loop of one run, shared by the CXXRTL and the Verilator harnesses
// (cxxrtl_harness.cc, verilator_harness.cc; see axsa/sim/engine.py for the timing):
//   clock low:  present feed items (valid=1 until accepted) and drain readiness, settle,
//               sample valid & ready (and the payload of every drain item taken);
//   clock high: the edge; sampled transfers take effect; one cycle counted.
//
// A harness instantiates `axsa::run_streams` with its model adapter `M`, which provides
//   typename M::Port;                          a port of the compiled design
//   M::Port *M::lookup(const char *name);      the port, or nullptr (error message set)
//   M::Port *M::clk;                           the clock port, or nullptr
//   void M::settle();                          evaluate the design
//   static size_t M::words(const M::Port *);   32-bit words of the port's value
//   static void M::set_bit(M::Port *, bool);   drive a 1-bit input (nullptr: nothing)
//   static bool M::get_bit(const M::Port *);   read a 1-bit output (nullptr: constant 1)
//   static void M::put(M::Port *, const uint32_t *words);   drive an input
//   static void M::get(const M::Port *, uint32_t *words);   read an output

#ifndef AXSA_STREAM_RUN_H
#define AXSA_STREAM_RUN_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace axsa {

// One run. Stream i is given by names[3i .. 3i+2] = valid, ready, payload ("" = constant 1
// for valid/ready, no payload). Feeds come first (n_feeds of them), then drains. counts[i]
// is the number of items, data[i] the payload words (M::words per item), done[i] returns
// the items transferred. Returns the cycle count, -1 on timeout, -2 on a bad name.
template <class M>
int64_t run_streams(M &model, int n_feeds, int n_drains, const char *const *names,
                    const int64_t *counts, uint32_t *const *data, int64_t *done,
                    int64_t max_cycles) {
	using Port = typename M::Port;
	struct Stream {
		Port *valid, *ready, *payload;
		size_t words;
	};
	int n = n_feeds + n_drains;
	std::vector<Stream> streams(n);
	for (int i = 0; i < n; i++) {
		Port *ports[3] = {nullptr, nullptr, nullptr};
		for (int j = 0; j < 3; j++) {
			if (names[3 * i + j][0] == '\0')
				continue;
			ports[j] = model.lookup(names[3 * i + j]);
			if (ports[j] == nullptr)
				return -2;
		}
		streams[i] = {ports[0], ports[1], ports[2], ports[2] ? M::words(ports[2]) : 0};
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
		M::set_bit(model.clk, false);
		for (int i = 0; i < n_feeds; i++) {
			Stream &s = streams[i];
			bool have = done[i] < counts[i];
			if (have && s.words)
				M::put(s.payload, data[i] + done[i] * s.words);
			M::set_bit(s.valid, have);
		}
		for (int i = n_feeds; i < n; i++)
			M::set_bit(streams[i].ready, done[i] < counts[i]);
		model.settle();
		for (int i = 0; i < n_feeds; i++)
			fire[i] = done[i] < counts[i] && M::get_bit(streams[i].ready);
		for (int i = n_feeds; i < n; i++) {
			Stream &s = streams[i];
			fire[i] = done[i] < counts[i] && M::get_bit(s.valid);
			if (fire[i] && s.words)
				M::get(s.payload, data[i] + done[i] * s.words);
		}
		M::set_bit(model.clk, true);
		model.settle();
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
	M::set_bit(model.clk, false);
	for (int i = 0; i < n_feeds; i++)
		M::set_bit(streams[i].valid, false);
	for (int i = n_feeds; i < n; i++)
		M::set_bit(streams[i].ready, false);
	return cycles;
}

}  // namespace axsa

#endif  // AXSA_STREAM_RUN_H
