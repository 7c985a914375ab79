/* SPDX-License-Identifier: MIT */
/* /metrics of forkd serve: the daemon's four timings as histograms and a request counter. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_internal.h"

/* Upper bounds in seconds, from a BRANCH pause (sub-millisecond) to a slow spawn. */
static const double bucket_le[API_METRIC_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,	    2.5,   10,	 60,
};

static const struct {
	const char *name, *help;
} metric_names[DAEMON_METRIC_COUNT] = {
    [DAEMON_METRIC_BRANCH_PAUSE] = {"forkd_branch_pause_seconds",
				    "The source VM's pause of a BRANCH."},
    [DAEMON_METRIC_SPAWN] = {"forkd_spawn_seconds", "A spawn request, start to every VM running."},
    [DAEMON_METRIC_RESTORE] = {"forkd_restore_seconds",
			       "One restored VM, exec to its control socket answering."},
    [DAEMON_METRIC_EXEC] = {"forkd_exec_seconds",
			    "An exec through the REST API, request to the command's end."},
};

void api_metrics_init(struct api_metrics *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
}

void api_metrics_destroy(struct api_metrics *m)
{
	pthread_mutex_destroy(&m->lock);
}

void api_metrics_observe(struct api_metrics *m, enum daemon_metric which, double seconds)
{
	struct api_histogram *h;
	size_t i;

	if ((unsigned)which >= DAEMON_METRIC_COUNT || !(seconds >= 0))
		return;
	pthread_mutex_lock(&m->lock);
	h = &m->hist[which];
	for (i = 0; i < API_METRIC_BUCKETS && seconds > bucket_le[i]; i++)
		;
	if (i < API_METRIC_BUCKETS)
		h->buckets[i]++;
	h->count++;
	h->sum += seconds;
	pthread_mutex_unlock(&m->lock);
}

void api_metrics_count(struct api_metrics *m, const char *method, unsigned code)
{
	size_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->nr_counters; i++)
		if (m->counters[i].code == code && strcmp(m->counters[i].method, method) == 0)
			break;
	if (i == m->nr_counters && i < API_MAX_COUNTERS) {
		/* Methods come from clients: anything but ours is counted as "other". */
		static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "HEAD"};
		const char *name = "other";
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strcmp(method, known[k]) == 0)
				name = known[k];
		for (i = 0; i < m->nr_counters; i++)
			if (m->counters[i].code == code && strcmp(m->counters[i].method, name) == 0)
				break;
		if (i == m->nr_counters) {
			snprintf(m->counters[i].method, sizeof(m->counters[i].method), "%s", name);
			m->counters[i].code = code;
			m->nr_counters++;
		}
	}
	if (i < m->nr_counters)
		m->counters[i].n++;
	pthread_mutex_unlock(&m->lock);
}

int api_metrics_render(struct api_metrics *m, char **text, size_t *len)
{
	FILE *f = open_memstream(text, len);

	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	for (int w = 0; w < DAEMON_METRIC_COUNT; w++) {
		const struct api_histogram *h = &m->hist[w];
		const char *name = metric_names[w].name;
		uint64_t cumulative = 0;

		fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, metric_names[w].help, name);
		for (int i = 0; i < API_METRIC_BUCKETS; i++) {
			cumulative += h->buckets[i];
			fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
				(unsigned long long)cumulative);
		}
		fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
			(unsigned long long)h->count, name, h->sum, name,
			(unsigned long long)h->count);
	}
	fputs("# HELP forkd_http_requests_total HTTP requests served, by method and status.\n"
	      "# TYPE forkd_http_requests_total counter\n",
	      f);
	for (size_t i = 0; i < m->nr_counters; i++)
		fprintf(f, "forkd_http_requests_total{method=\"%s\",code=\"%u\"} %llu\n",
			m->counters[i].method, m->counters[i].code,
			(unsigned long long)m->counters[i].n);
	pthread_mutex_unlock(&m->lock);
	if (fclose(f) != 0) {
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	return 0;
}
