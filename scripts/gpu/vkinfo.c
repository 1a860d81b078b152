/* vkinfo: list the Vulkan physical devices the loader finds, as one JSON object on stdout.
 *
 * The GPU kit runs it on the device machine to record which adapter wgpu chooses from (wgpu's
 * "DefaultDevice" picks the discrete GPU first), without the Vulkan SDK or vulkaninfo: it
 * dlopen()s libvulkan.so.1 and declares the handful of types it needs itself, so it builds
 * with a bare C compiler and no Vulkan headers:
 *
 *     cc -O2 -o vkinfo scripts/gpu/vkinfo.c -ldl
 *
 * Exit status: 0 with at least one device, 1 when the loader or a driver is missing (the JSON
 * then says why).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int32_t VkResult;
typedef void *VkInstance;
typedef void *VkPhysicalDevice;

typedef struct {
    int32_t sType; /* VK_STRUCTURE_TYPE_APPLICATION_INFO = 0 */
    const void *pNext;
    const char *pApplicationName;
    uint32_t applicationVersion;
    const char *pEngineName;
    uint32_t engineVersion;
    uint32_t apiVersion;
} VkApplicationInfo;

typedef struct {
    int32_t sType; /* VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO = 1 */
    const void *pNext;
    uint32_t flags;
    const VkApplicationInfo *pApplicationInfo;
    uint32_t enabledLayerCount;
    const char *const *ppEnabledLayerNames;
    uint32_t enabledExtensionCount;
    const char *const *ppEnabledExtensionNames;
} VkInstanceCreateInfo;

/* The head of VkPhysicalDeviceProperties; the rest (limits, sparse properties: ~800 bytes)
 * lands in the padding. */
typedef struct {
    uint32_t apiVersion;
    uint32_t driverVersion;
    uint32_t vendorID;
    uint32_t deviceID;
    int32_t deviceType;
    char deviceName[256];
    uint8_t rest[4096];
} VkPhysicalDevicePropertiesHead;

typedef VkResult (*CreateInstance)(const VkInstanceCreateInfo *, const void *, VkInstance *);
typedef void (*DestroyInstance)(VkInstance, const void *);
typedef VkResult (*EnumerateDevices)(VkInstance, uint32_t *, VkPhysicalDevice *);
typedef void (*GetProperties)(VkPhysicalDevice, VkPhysicalDevicePropertiesHead *);

static const char *type_name(int32_t t) {
    static const char *names[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    return t >= 0 && t <= 4 ? names[t] : "unknown";
}

/* Print s as a JSON string (device names are plain ASCII; escape the two that matter). */
static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
    putchar('"');
}

static int fail(const char *why, const char *detail) {
    printf("{\"ok\": false, \"error\": ");
    json_string(why);
    printf(", \"detail\": ");
    json_string(detail ? detail : "");
    printf(", \"devices\": []}\n");
    return 1;
}

int main(void) {
    void *lib = dlopen("libvulkan.so.1", RTLD_NOW);
    if (!lib) return fail("libvulkan.so.1 not found (no Vulkan loader installed)", dlerror());
    CreateInstance create = (CreateInstance)dlsym(lib, "vkCreateInstance");
    DestroyInstance destroy = (DestroyInstance)dlsym(lib, "vkDestroyInstance");
    EnumerateDevices enumerate = (EnumerateDevices)dlsym(lib, "vkEnumeratePhysicalDevices");
    GetProperties properties = (GetProperties)dlsym(lib, "vkGetPhysicalDeviceProperties");
    if (!create || !destroy || !enumerate || !properties)
        return fail("libvulkan.so.1 lacks the Vulkan 1.0 entry points", dlerror());

    VkApplicationInfo app = {0, NULL, "vkinfo", 1, "tinylora-gpu-kit", 1, (1u << 22) | (1u << 12)};
    VkInstanceCreateInfo info = {1, NULL, 0, &app, 0, NULL, 0, NULL};
    VkInstance instance = NULL;
    VkResult r = create(&info, NULL, &instance);
    if (r != 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "vkCreateInstance returned %d (-9: no driver/ICD found)", r);
        return fail("no Vulkan instance", detail);
    }
    VkPhysicalDevice devices[16];
    uint32_t n = 16;
    r = enumerate(instance, &n, devices);
    if (r < 0) return fail("vkEnumeratePhysicalDevices failed", NULL);

    printf("{\"ok\": %s, \"devices\": [", n > 0 ? "true" : "false");
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDevicePropertiesHead p;
        memset(&p, 0, sizeof p);
        properties(devices[i], &p);
        p.deviceName[255] = 0;
        printf("%s{\"name\": ", i ? ", " : "");
        json_string(p.deviceName);
        printf(", \"type\": \"%s\", \"vendor_id\": \"0x%04x\", \"device_id\": \"0x%04x\", "
               "\"api_version\": \"%u.%u.%u\", \"driver_version_raw\": %u}",
               type_name(p.deviceType), p.vendorID, p.deviceID, (p.apiVersion >> 22) & 0x7f,
               (p.apiVersion >> 12) & 0x3ff, p.apiVersion & 0xfff, p.driverVersion);
    }
    printf("]}\n");
    destroy(instance, NULL);
    return n > 0 ? 0 : 1;
}
