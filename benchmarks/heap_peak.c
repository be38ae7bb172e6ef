/* Peak heap bytes of a process, for the benchmarks' memory columns.
 *
 * Loaded with LD_PRELOAD, it wraps glibc's allocation functions and keeps
 * the bytes in use (malloc_usable_size of every live block) and their peak.
 * TensorFlow's CPU allocator, XLA:CPU's buffers, PyTorch's CPU allocator and
 * LiteRT all allocate through these functions, so one count serves every
 * framework alike, without the resident set's page granularity and without
 * the frameworks' own, incomparable, statistics.
 *
 * The benchmark compiles it (cc -shared -fPIC -O2) and reads it with ctypes:
 * heap_peak_reset() sets the peak to the bytes in use now; heap_peak_bytes()
 * and heap_current_bytes() read them. glibc's __libc_* entry points are the
 * real allocator, so no dlsym bootstrap is needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *pointer);

static int64_t current_bytes;
static int64_t peak_bytes;

static void *counted(void *pointer) {
  if (pointer != NULL) {
    int64_t now = __atomic_add_fetch(
        &current_bytes, (int64_t)malloc_usable_size(pointer), __ATOMIC_RELAXED);
    int64_t peak = __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&peak_bytes, &peak, now, 1,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
  }
  return pointer;
}

static void uncount(void *pointer) {
  if (pointer != NULL) {
    __atomic_sub_fetch(&current_bytes, (int64_t)malloc_usable_size(pointer),
                       __ATOMIC_RELAXED);
  }
}

void *malloc(size_t size) { return counted(__libc_malloc(size)); }

void *calloc(size_t count, size_t size) {
  return counted(__libc_calloc(count, size));
}

void *realloc(void *pointer, size_t size) {
  if (pointer == NULL) return malloc(size);
  size_t old = malloc_usable_size(pointer);
  void *moved = __libc_realloc(pointer, size);
  if (moved != NULL || size == 0) {
    __atomic_sub_fetch(&current_bytes, (int64_t)old, __ATOMIC_RELAXED);
    counted(moved);
  }
  return moved;
}

void free(void *pointer) {
  uncount(pointer);
  __libc_free(pointer);
}

void *memalign(size_t alignment, size_t size) {
  return counted(__libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size) {
  return counted(__libc_memalign(alignment, size));
}

int posix_memalign(void **result, size_t alignment, size_t size) {
  if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) {
    return EINVAL;
  }
  void *pointer = counted(__libc_memalign(alignment, size));
  if (pointer == NULL) return ENOMEM;
  *result = pointer;
  return 0;
}

void *valloc(size_t size) { return memalign(4096, size); }

void *reallocarray(void *pointer, size_t count, size_t size) {
  size_t bytes;
  if (__builtin_mul_overflow(count, size, &bytes)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(pointer, bytes);
}

void heap_peak_reset(void) {
  __atomic_store_n(&peak_bytes, __atomic_load_n(&current_bytes,
                                                __ATOMIC_RELAXED),
                   __ATOMIC_RELAXED);
}

int64_t heap_peak_bytes(void) {
  return __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED);
}

int64_t heap_current_bytes(void) {
  return __atomic_load_n(&current_bytes, __ATOMIC_RELAXED);
}
