/* SPDX-License-Identifier: MIT */
/* Naming a JSON value's type in error messages ("expected a string, got an array"). */
#ifndef FORKD_UTIL_JSON_KIND_H
#define FORKD_UTIL_JSON_KIND_H

#include <jansson.h>

/* "an object", "an array", "a string", "an integer", "a number", "a boolean" or "null". */
const char *fk_json_kind(const json_t *v);

#endif
