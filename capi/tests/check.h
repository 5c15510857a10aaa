/* Assertion macros of the C test programs: on failure they print where and why, and make the
 * enclosing function return 1. */
#ifndef FC_TEST_CHECK_H
#define FC_TEST_CHECK_H

#include <stdio.h>
#include "framecache.h"

#define EXPECT(call, code)                                                                 \
  do {                                                                                     \
    int rc_ = (call);                                                                      \
    if (rc_ != (code)) {                                                                   \
      fprintf(stderr, "%s:%d: %s gave %d (%s), expected %d\n", __FILE__, __LINE__, #call,  \
              rc_, fc_last_error(), (code));                                               \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

#endif
